"""Copies a trained model folder into the package (src/storyviz/assets/models/NAME) in float16.

    python scripts/ship_model.py RUN/model NAME [--data DATA] [--sampling top_k=32 --sampling guidance=3]
                                 [--scorer SCORER_RUN/model] [--image-tokenizer TOKENIZER_RUN/model]

A bundle (DALL-E, StoryDALL-E, a scorer) is copied part by part: each part with weights in float16 (a part that
is itself a bundle likewise), the text tokenizer as it is; any other model folder (ARLDM, a judge) is converted
whole. `--scorer` adds a re-ranking scorer (`storyviz train scorer`) to a token model's bundle as its "scorer"
part, which its pipeline then uses for `--candidates`. `--image-tokenizer` replaces a token model's image tokenizer
with one that makes the same codes (its encoder and codebook equal the bundle's; e.g. a decoder trained to read the
source frame, `model.reference_resolutions`). Judges are measured again on the held-out
split of DATA after the conversion (their config.json keeps the accuracy the shipped weights reach).
`--sampling KEY=VALUE` records the sampling settings the model's measured results used as its defaults
(config.json "sampling", read by `storyviz.pipelines.base.model_sampling`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from storyviz.files import atomic_dir
from storyviz.pipelines.base import PIPELINES, SamplingOptions
from storyviz.registry import ASSETS, load_model
from storyviz.weights import CONFIG_NAME, WEIGHTS_NAME, read_weights_config

KEEP = ("training_step", "ema", "data")


def ship_weights(source: Path, out: Path, sampling: dict | None = None) -> None:
    """One self-describing weights folder, in float16 (with the sampling defaults of a story model)."""
    info = read_weights_config(source)
    model = load_model(source).half()
    extra = {k: info[k] for k in KEEP if k in info} | {"weights_dtype": "float16"}
    model.save_pretrained(out, extra=extra | ({"sampling": sampling} if sampling else {}))


def ship_bundle(source: Path, out: Path, sampling: dict, added: dict[str, Path] | None = None) -> None:
    """A bundle folder: its config.json (with the sampling defaults), every weights part in float16 (bundle parts
    part by part), other parts copied; `added` parts {name: folder} join it."""
    parts = {name: source / folder for name, folder in read_weights_config(source)["config"]["parts"].items()}
    parts |= added or {}
    with atomic_dir(out) as tmp:
        for name, folder in parts.items():
            if (folder / WEIGHTS_NAME).is_file():
                ship_weights(folder, tmp / name)
            elif (folder / CONFIG_NAME).is_file() and read_weights_config(folder)["model_type"].endswith("-bundle"):
                ship_bundle(folder, tmp / name, {})
            else:
                shutil.copytree(folder, tmp / name)
        payload = json.loads((source / CONFIG_NAME).read_text())
        payload["config"]["parts"] = {name: name for name in parts}
        payload |= {"weights_dtype": "float16"} | ({"sampling": sampling} if sampling else {})
        (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True))


def check_same_codes(shipped: Path, replacement: Path) -> None:
    """Refuses an image tokenizer whose encoder, quant_conv or codebook differ from the bundle's."""
    before, after = load_model(shipped).state_dict(), load_model(replacement).state_dict()
    coding = [key for key in before if key.startswith(("encoder.", "quant_conv.", "quantize."))]
    differ = [key for key in coding if key not in after or not before[key].float().equal(after[key].float())]
    if differ:
        raise SystemExit(f"--image-tokenizer {replacement}: makes other codes than {shipped} ({differ[:3]} differ)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="trained model folder (a run's model/)")
    parser.add_argument("name", help="bundled model name")
    parser.add_argument("--data", help="data set for re-measuring a judge")
    parser.add_argument("--sampling", action="append", default=[], metavar="KEY=VALUE", help="a sampling default")
    parser.add_argument("--scorer", type=Path, help="a scorer bundle to add as the token model's 'scorer' part")
    parser.add_argument("--image-tokenizer", type=Path, help="an image tokenizer with the bundle's codes")
    args = parser.parse_args()
    source, out = Path(args.source), ASSETS / "models" / args.name
    info = read_weights_config(source)
    defaults = SamplingOptions().to_dict()
    changed = SamplingOptions().with_overrides(args.sampling).to_dict()
    sampling = {key: value for key, value in changed.items() if value != defaults[key]}
    if args.scorer is not None and info["model_type"] not in ("dalle-bundle", "storydalle-bundle"):
        raise SystemExit(f"--scorer applies to token models (DALL-E, StoryDALL-E), not to a {info['model_type']!r}")
    if info["model_type"].endswith("-bundle"):
        added = {"scorer": args.scorer} if args.scorer else {}
        if args.image_tokenizer is not None:
            check_same_codes(source / info["config"]["parts"]["image_tokenizer"], args.image_tokenizer)
            added["image_tokenizer"] = args.image_tokenizer
        ship_bundle(source, out, sampling, added)
    else:
        if sampling and info["model_type"] not in PIPELINES:
            raise SystemExit(f"--sampling applies to models that generate stories, not to a {info['model_type']!r}")
        ship_weights(source, out, sampling)
    if info["model_type"] == "judge":
        if not args.data:
            raise SystemExit("a judge needs --data to be measured again after the conversion")
        from storyviz.data import open_dataset
        from storyviz.evaluation.judges import certify_judge

        certify_judge(out, open_dataset(args.data), info.get("heldout_split", "val"))
    print(f"shipped {args.source} as {Path(out)}")


if __name__ == "__main__":
    main()
