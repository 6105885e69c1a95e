"""Setting accuracy of generated sprites frames, split by whether the story has moved since frame 1.

    python benchmarks/setting_moves.py SAMPLES_DIR --data DATA [--judge judge-sprites]

SAMPLES_DIR is the `samples` folder that `storyviz evaluate --out OUT` writes (OUT/samples). Prints the share of
generated frames still in frame 1's setting, the judge's setting accuracy on those and on the others, and how many
of the others it reads as frame 1's setting (the old background copied); then the accuracy on the frames after a
move split into the move frame itself (its caption names the new place) and the later ones (captions silent on it).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from storyviz.data.store import open_dataset
from storyviz.evaluation.judges import judge_frames, load_judge
from storyviz.evaluation.samples import read_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="a samples folder (OUT/samples of storyviz evaluate)")
    parser.add_argument("--data", required=True, help="the sprites data set the samples were made from")
    parser.add_argument("--judge", default="judge-sprites")
    args = parser.parse_args()
    samples = read_samples(args.samples)
    stories = open_dataset(args.data).split(samples.split)
    frames, truth, first, previous = [], [], [], []
    for story, index, frame in samples.generated_frames():
        setting = np.asarray(stories[story.story_index]["labels"]["setting"])
        frames.append(frame)
        truth.append(setting[index])
        first.append(setting[0])
        previous.append(setting[index - 1] if index else setting[0])
    predicted = judge_frames(load_judge(args.judge), np.stack(frames))[0]["setting"]
    truth, first, previous = np.array(truth), np.array(first), np.array(previous)
    stayed = truth == first
    moved = ~stayed
    result = {
        "frames": len(truth),
        "share_in_first_setting": round(float(stayed.mean()), 3),
        "accuracy_in_first_setting": round(float((predicted[stayed] == truth[stayed]).mean()), 3),
        "accuracy_after_a_move": round(float((predicted[moved] == truth[moved]).mean()), 3) if moved.any() else None,
        "moved_read_as_first_setting": round(float((predicted[moved] == first[moved]).mean()), 3)
        if moved.any()
        else None,
    }
    for name, where in (("move_frame", moved & (truth != previous)), ("later_after_move", moved & (truth == previous))):
        result[f"accuracy_{name}"] = round(float((predicted[where] == truth[where]).mean()), 3) if where.any() else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
