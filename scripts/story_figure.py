"""The README's figure of generated stories: for each story, its real frames in one row and, below, the frames a
model generated (from `storyviz evaluate`'s samples folder; story continuation keeps the real frame 1).

    python scripts/story_figure.py EVAL/samples --data DATA --split test --stories 4 --out docs/stories.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from storyviz.data import open_dataset


def story_rows(samples: Path, data: Path, split: str, count: int, scale: int) -> Image.Image:
    stories = open_dataset(data).split(split)
    indices = sorted({int(path.name[:5]) for path in samples.glob("*_*.png")})[:count]
    if not indices:
        raise SystemExit(f"{samples}: no sample frames (NNNNN_FF.png) found")
    rows = []
    for index in indices:
        real = list(stories[index]["frames"])
        generated = [
            np.asarray(Image.open(path).convert("RGB")) if (path := samples / f"{index:05d}_{j:02d}.png").is_file()
            else real[j]  # the source frame of a continuation
            for j in range(len(real))
        ]  # fmt: skip
        rows += [np.concatenate(real, axis=1), np.concatenate(generated, axis=1)]
    image = Image.fromarray(np.concatenate(rows, axis=0))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path, help="a samples folder written by `storyviz evaluate`")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--stories", type=int, default=4)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    story_rows(args.samples, args.data, args.split, args.stories, args.scale).save(args.out)
    made_with = json.loads((args.samples / "samples.json").read_text()).get("made_with", {})
    print(f"wrote {args.out} from {made_with.get('model', args.samples)}")


if __name__ == "__main__":
    main()
