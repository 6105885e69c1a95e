"""The README's figure of generated stories: for each story, its real frames in one row and, below, the frames a
model generated (from `storyviz evaluate`'s samples folder; story continuation keeps the real frame 1).

    python scripts/story_figure.py EVAL/samples --data DATA --split test --stories 4 --out docs/stories.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from storyviz.data import open_dataset
from storyviz.evaluation.samples import read_samples


def story_rows(samples_dir: Path, data: Path, split: str, count: int, scale: int) -> Image.Image:
    samples = read_samples(samples_dir)
    stories = open_dataset(data).split(split)
    if not samples.stories:
        raise SystemExit(f"{samples_dir}: no stories in its samples.json")
    rows = []
    for story in samples.stories[:count]:
        real = list(stories[story.story_index]["frames"])
        generated = [samples.frame(story, j) if made else real[j] for j, made in enumerate(story.generated)]
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
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
