"""The "copy the source frame" baseline: every generated frame is the story's first frame, scored like a model.

    python benchmarks/copy_baseline.py --data DATA --split test --stories 100 --out OUT [--no-inception]

Prints the report rows (generated = the copies, real = ceiling, shuffled = floor) as JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from storyviz.data import open_dataset
from storyviz.evaluation.report import report_dict
from storyviz.evaluation.run import evaluate_folder, pick_stories
from storyviz.evaluation.samples import write_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--stories", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-inception", action="store_true")
    args = parser.parse_args()
    data = open_dataset(args.data)
    split = data.split(args.split)
    stories = []
    for index in pick_stories(len(split), args.stories, args.seed):
        story = split[index]
        frames = np.repeat(story["frames"][:1], len(story["frames"]), axis=0)
        generated = [False] + [True] * (len(frames) - 1)
        stories.append({**story, "frames": frames, "story_index": index, "generated": generated})
    samples = write_samples(f"{args.out}/samples", stories, data.meta["name"], args.split)
    evaluation = evaluate_folder(samples, args.data, args.split, args.out, inception=not args.no_inception)
    report = report_dict(evaluation)
    print(json.dumps({row: report[row] for row in ("generated", "real", "shuffled")}, indent=2))


if __name__ == "__main__":
    main()
