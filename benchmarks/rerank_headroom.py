"""How much re-ranking can gain: the scorer's pick among several samples of each frame against the judge's pick.

    python benchmarks/rerank_headroom.py --data DATA --out OUT [--model sprites] [--split val] [--stories 50]
        [--runs 8] [--captions plain|pronoun] [--scorer DIR] [--name-weights W ...] [sampling options of
        storyviz evaluate, but --seed and --candidates]

Samples the same stories (the evaluation's seeded choice, seed 0) R times with one candidate each and sampling
seeds 0..R-1, into OUT/run-S (kept and reused: give another OUT for another model, split, captions or
settings), so every generated frame has R independent samples. Printed, for the first k runs (k = 1, 2, 4, ...
up to R): char_f1, frame_acc and (on a data set with the judge's slot heads) appearance of the frames kept by
- "first": run 1's frame (what one candidate gives);
- "scorer": the frame the re-ranking scorer (--scorer, else the model's "scorer" part) scores highest
  against its caption (read after the story's earlier captions), as `--candidates k` keeps (with
  --name-weights, one row per weight of a scorer's cast agreement, storyviz.models.scorer: to choose its
  `name_weight`);
- "oracle": the frame whose judged character set is closest to the truth (fewest wrong characters; ties keep
  the earlier run), the ceiling of any re-ranking of these samples for who is drawn;
- "oracle (look)": the frame with the best appearance score (storyviz.evaluation.metrics), the same ceiling for
  looks.
The judge is the evaluation's own (judge-<data set>); it only picks in the oracle rows, which no model can use.
With --check-judge J (another judge, e.g. one trained with another seed), each row is also read by J: where
the oracle's gain over the scorer shrinks under J, it came from the first judge's misreadings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from storyviz.cli.sampling_args import add_sampling_arguments, sampling_changes
from storyviz.data.store import open_dataset
from storyviz.evaluation.judges import judge_frames, load_judge
from storyviz.evaluation.metrics import ATTRIBUTES, SLOTS, appearance_by_frame, char_f1, frame_acc
from storyviz.evaluation.run import generate_samples, pick_stories
from storyviz.evaluation.samples import SAMPLES_FILE, read_samples
from storyviz.pipelines.dalle import bundled_scorer
from storyviz.pipelines.rerank import Reranker
from storyviz.registry import resolve_model_dir

LOOK_HEADS = [f"{slot}.{attribute}" for slot in SLOTS for attribute in ATTRIBUTES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="folder for the runs' samples (reused when present)")
    parser.add_argument("--model", default=None, help="default: the bundled default model")
    parser.add_argument("--split", default="val")
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--captions", choices=["plain", "pronoun"], default="plain")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--judge", default=None, help="default: judge-<data set name>")
    parser.add_argument("--check-judge", default=None, help="a second judge that reads the same picks")
    parser.add_argument("--name-weights", type=float, nargs="+", default=None, help="cast agreement weights to try")
    add_sampling_arguments(parser)
    args = parser.parse_args()
    data = open_dataset(args.data)
    stories = data.split(args.split)
    indices = pick_stories(len(stories), args.stories, seed=0)
    runs = []
    for seed in range(args.runs):
        folder = Path(args.out) / f"run-{seed}"
        if not (folder / SAMPLES_FILE).is_file():
            changes = {**sampling_changes(args), "seed": seed, "candidates": 1}
            generate_samples(args.model, args.data, args.split, folder, indices, changes, captions=args.captions)
        runs.append(read_samples(folder))
    generated = [(story, index) for story in runs[0].stories for index, made in enumerate(story.generated) if made]
    keys = [(story.story_index, index) for story, index in generated]
    truth = np.stack([np.asarray(stories[story]["labels"]["characters"])[index] for story, index in keys])
    captions = [story.captions[index] for story, index in generated]
    earlier = [story.captions[:index] for story, index in generated]
    frames = np.stack([np.stack([frame for _, _, frame in run.generated_frames()]) for run in runs], 1)  # (F, R, ...)
    flat = frames.reshape(-1, *frames.shape[2:])
    looks_known = all(head in stories[0]["labels"] for head in LOOK_HEADS)  # sprites' slot labels
    labels = {h: np.stack([np.asarray(stories[s]["labels"][h])[i] for s, i in keys]) for h in LOOK_HEADS if looks_known}

    def read(judge_name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """-> the characters a judge reads in every sample (F, R, C), and each sample's appearance score (F, R)
        (None for a data set without the slot heads)."""
        judge = load_judge(judge_name)
        readings = judge_frames(judge, flat)[0]
        characters = readings["characters"].reshape(len(keys), len(runs), -1)
        if not looks_known or not all(head in readings for head in LOOK_HEADS):
            return characters, None
        truth_per_sample = {head: np.repeat(labels[head], len(runs), axis=0) for head in LOOK_HEADS}
        return characters, appearance_by_frame(readings, truth_per_sample).reshape(len(keys), len(runs))

    judged, look = read(args.judge or f"judge-{data.meta['name']}")
    readers = {"": (judged, look)}
    if args.check_judge:
        readers[" (check judge)"] = read(args.check_judge)
    images = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    if args.scorer:
        scorer = Reranker.from_pretrained(resolve_model_dir(args.scorer))
    elif (scorer := bundled_scorer(resolve_model_dir(args.model))) is None:
        raise SystemExit(f"{args.model or 'the default model'} has no scorer part: give --scorer")
    scores = {}
    for weight in args.name_weights or [None]:
        if weight is not None:
            if not scorer.scorer.config.names:
                raise SystemExit("--name-weights: the scorer has no cast heads")
            scorer.scorer.config = scorer.scorer.config.replace(name_weight=weight)
        name = "scorer" if weight is None else f"scorer w={weight:g}"
        chunks = [slice(first, first + 64) for first in range(0, len(keys), 64)]
        scores[name] = torch.cat([scorer(captions[c], images[c], earlier[c]) for c in chunks])
    wrong = (judged != truth[:, None]).sum(-1)  # (F, R)
    rows = np.arange(len(keys))
    measured = "char_f1 / frame_acc" + (" / appearance" if look is not None else "")
    print(f"{len(keys)} frames, {len(runs)} runs; {measured} of the kept frames")
    count = 1
    while True:
        k = min(count, len(runs))
        picks = {
            "first": np.zeros(len(keys), dtype=int),
            **{name: scored[:, :k].argmax(1).numpy() for name, scored in scores.items()},
            "oracle": wrong[:, :k].argmin(1),
        }
        if look is not None:
            picks["oracle (look)"] = np.nan_to_num(look[:, :k], nan=-1.0).argmax(1)
        for reader, (characters, looks) in readers.items():
            line = []
            for name, pick in picks.items():
                kept = characters[rows, pick]
                numbers = f"{name} {char_f1(kept, truth):.3f} / {frame_acc(kept, truth):.3f}"
                line.append(numbers + (f" / {np.nanmean(looks[rows, pick]):.3f}" if looks is not None else ""))
            print(f"k={k:3d}{reader}  {'  '.join(line)}")
        if k == len(runs):
            break
        count *= 2


if __name__ == "__main__":
    main()
