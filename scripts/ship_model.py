"""Copies a trained model folder into the package (src/storyviz/assets/models/NAME) in float16.

    python scripts/ship_model.py RUN/model NAME [--data DATA]

Judges are measured again on the held-out split of DATA after the conversion (their config.json keeps the
accuracy the shipped weights reach).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from storyviz.registry import ASSETS, load_model
from storyviz.weights import read_weights_config

KEEP = ("training_step", "ema", "data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="trained model folder (a run's model/)")
    parser.add_argument("name", help="bundled model name")
    parser.add_argument("--data", help="data set for re-measuring a judge")
    args = parser.parse_args()
    info = read_weights_config(args.source)
    out = ASSETS / "models" / args.name
    model = load_model(args.source).half()
    model.save_pretrained(out, extra={**{k: info[k] for k in KEEP if k in info}, "weights_dtype": "float16"})
    if info["model_type"] == "judge":
        if not args.data:
            raise SystemExit("a judge needs --data to be measured again after the conversion")
        from storyviz.data import open_dataset
        from storyviz.evaluation.judges import certify_judge

        certify_judge(out, open_dataset(args.data), info.get("heldout_split", "val"))
    print(f"shipped {args.source} as {Path(out)}")


if __name__ == "__main__":
    main()
