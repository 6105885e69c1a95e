"""How well generated sprites frames draw each character's look, split by the kind of character.

    python benchmarks/appearance_by_kind.py SAMPLES_DIR --data DATA [--judge judge-sprites]

SAMPLES_DIR is the `samples` folder that `storyviz evaluate --out OUT` writes (OUT/samples). For every character
that the ground truth puts in a generated frame, the judge reads the body, colour and accessory drawn in that
character's screen slot (characters keep their slot through a story). Printed per kind of character: "named" (the
nine recurring characters, whose look the name gives), "guest" (one story only; frame 1's caption describes the
look, later captions only name it) and "unseen" (test_unseen's held-out looks, the same way): how many, the share
with each attribute right, with all three right ("look"), with the slot drawn empty, and drawn as one of the named
characters' looks instead; then the same for characters in frame 1's pose (same action and held object, so the
source frame shows them exactly as they should be drawn: "KIND, same pose") and in a new one ("KIND, new pose").
Then, under "presence", how often the judge finds the named characters a frame should show ("kept": also in frame 1,
the source; "entering": not in frame 1), and how often it finds a character of frame 1 that has left ("left").
Last, "looks_repaired": the appearance score as judged, and what it would be with the cast as drawn but every
drawn character that stands where the truth has one given that character's look (an extra character keeps its
drawn look): how much of the appearance score is lost to looks rather than to who is drawn.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from storyviz.data.sprites.world import ACCESSORIES, BODIES, COLOURS, NAMED
from storyviz.data.store import open_dataset
from storyviz.evaluation.judges import judge_frames, load_judge
from storyviz.evaluation.metrics import SLOTS
from storyviz.evaluation.samples import read_samples

ATTRIBUTES = {"body": ["none", *BODIES], "colour": ["none", *COLOURS], "accessory": ["none", *ACCESSORIES]}
NAMED_LOOKS = {character.look for character in NAMED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", help="a samples folder (OUT/samples of storyviz evaluate)")
    parser.add_argument("--data", required=True, help="the sprites data set the samples were made from")
    parser.add_argument("--judge", default="judge-sprites")
    args = parser.parse_args()
    samples = read_samples(args.samples)
    stories = open_dataset(args.data).split(samples.split)
    frames, characters = [], []  # characters: per generated frame, [(annotation of a character, its group)]
    presence = []  # per generated frame: ({named character: "kept" / "entering" / "left"})
    for story, index, frame in samples.generated_frames():
        annotation = stories[story.story_index]["annotation"]
        first = {c["name"]: (c["action"], c["holding"]) for c in annotation[0]["characters"]}
        frames.append(frame)
        characters.append([
            (c, "same pose" if first.get(c["name"]) == (c["action"], c["holding"]) else "new pose")
            for c in annotation[index]["characters"]
        ])  # fmt: skip
        here = {c["name"]: "kept" if c["name"] in first else "entering" for c in annotation[index]["characters"]}
        presence.append({**dict.fromkeys(set(first) - set(here), "left"), **here})
    judge = load_judge(args.judge)
    predicted = judge_frames(judge, np.stack(frames))[0]
    counts: dict[str, dict[str, int]] = {}
    for row, present in enumerate(characters):
        for character, pose in present:
            drawn = tuple(ATTRIBUTES[name][int(predicted[f"{character['slot']}.{name}"][row])] for name in ATTRIBUTES)
            truth = tuple(character[name] for name in ATTRIBUTES)
            for group in (character["kind"], f"{character['kind']}, {pose}"):
                count = counts.setdefault(group, dict.fromkeys(["characters", *ATTRIBUTES, "look", "empty",
                                                                "drawn_as_named"], 0))  # fmt: skip
                count["characters"] += 1
                for name, value, true in zip(ATTRIBUTES, drawn, truth):
                    count[name] += value == true
                count["look"] += drawn == truth
                count["empty"] += drawn[0] == "none"
                count["drawn_as_named"] += drawn != truth and drawn in NAMED_LOOKS
    result = {
        kind: {
            "characters": c["characters"],
            **{k: round(v / c["characters"], 3) for k, v in c.items() if k != "characters"},
        }
        for kind, c in sorted(counts.items())
    }
    result["presence"] = presence_shares(presence, predicted["characters"], judge)
    result["looks_repaired"] = repaired_looks(characters, predicted)
    print(json.dumps(result))


def repaired_looks(characters: list[list[tuple[dict, str]]], predicted: dict[str, np.ndarray]) -> dict[str, float]:
    """characters: per frame the true characters (annotation, pose); predicted: the judge's slot heads ->
    {"judged": the frames' mean appearance score, "bound": the same with each drawn character that stands in a
    truly occupied slot given the true look}. The score per frame is appearance_consistency's."""

    def score(drawn: Counter, truth: Counter) -> float:
        size = max(sum(drawn.values()), sum(truth.values()))
        return 1.0 if size == 0 else sum((drawn & truth).values()) / size

    judged, bound = [], []
    for row, present in enumerate(characters):
        truth = {c["slot"]: tuple(c[name] for name in ATTRIBUTES) for c, _ in present}
        drawn = {slot: tuple(ATTRIBUTES[name][int(predicted[f"{slot}.{name}"][row])] for name in ATTRIBUTES)
                 for slot in SLOTS}  # fmt: skip
        drawn = {slot: look for slot, look in drawn.items() if look[0] != "none"}
        judged.append(score(Counter(drawn.values()), Counter(truth.values())))
        bound.append(score(Counter(truth.get(slot, look) for slot, look in drawn.items()), Counter(truth.values())))
    return {"judged": round(float(np.mean(judged)), 3), "bound": round(float(np.mean(bound)), 3)}


def presence_shares(presence: list[dict[str, str]], drawn: np.ndarray, judge) -> dict[str, dict[str, float]]:
    """presence: per frame {name: "kept" / "entering" / "left"}; drawn (frames, classes) the judge's multi-hot
    characters -> {group: {"characters": count, "drawn": share the judge finds}} (guests are not among its
    classes)."""
    classes = next(head.classes for head in judge.config.heads if head.name == "characters")
    counts: dict[str, list[int]] = {}
    for row, names in enumerate(presence):
        for name, group in names.items():
            if name in classes:
                count = counts.setdefault(group, [0, 0])
                count[0] += 1
                count[1] += int(drawn[row, classes.index(name)])
    return {group: {"characters": n, "drawn": round(hits / n, 3)} for group, (n, hits) in sorted(counts.items())}


if __name__ == "__main__":
    main()
