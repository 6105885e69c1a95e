"""How well a StoryDALL-E model predicts the tokens of each character's sprite box (sprites, teacher forcing).

    python benchmarks/copy_probe.py BUNDLE --data DATA --codes CODES [--split test_unseen --stories 50]

BUNDLE is a storydalle bundle folder (a run's model, an export, or a bundled name's folder); CODES the codes folder
of DATA made with the bundle's image tokenizer. For frames 2-5 of the first STORIES stories (plain captions, frame
1 as the source, every earlier token the true one), the tokens inside each slot's sprite box are grouped by what the
slot holds ("named" / "guest" / "unseen" character, in frame 1's pose ("same") or a new one, or "empty") and by
whether the token equals the source frame's at the same position ("copyable") or not ("changed"). Printed per
group: the token count, the mean probability of the true token, and with `copy_source` the mean logit bonus the
copy head gives the source's token there.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from storyviz.data.codes import open_codes
from storyviz.data.sprites.draw import slot_box
from storyviz.data.sprites.world import SLOTS
from storyviz.data.store import open_dataset
from storyviz.pipelines import load_pipeline


def slot_masks(grid: int, image_size: int) -> dict[str, torch.Tensor]:
    """Each slot's sprite box as a (grid * grid,) bool mask over the code grid (codes the box touches)."""
    scale = image_size // grid
    masks = {}
    for slot in SLOTS:
        x0, y0, x1, y1 = slot_box(image_size, slot)
        mask = torch.zeros(grid, grid, dtype=torch.bool)
        mask[y0 // scale : -(-y1 // scale), x0 // scale : -(-x1 // scale)] = True
        masks[slot] = mask.flatten()
    return masks


def slot_groups(annotation: list[dict], index: int) -> dict[str, str]:
    """Frame `index`'s slots -> "KIND POSE" of the character there ("empty" when none)."""
    first = {c["name"]: (c["action"], c["holding"]) for c in annotation[0]["characters"]}
    groups = dict.fromkeys(SLOTS, "empty")
    for c in annotation[index]["characters"]:
        pose = "same" if first.get(c["name"]) == (c["action"], c["holding"]) else "new"
        groups[c["slot"]] = f"{c['kind']} {pose}"
    return groups


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="a storydalle bundle folder")
    parser.add_argument("--data", required=True)
    parser.add_argument("--codes", required=True)
    parser.add_argument("--split", default="test_unseen")
    parser.add_argument("--stories", type=int, default=50)
    args = parser.parse_args()
    pipeline = load_pipeline(args.bundle)
    model = pipeline.model.float().eval()
    stories = open_dataset(args.data).split(args.split)
    codes = open_codes(args.codes).split(args.split)
    bonus: list[torch.Tensor] = []
    head = model.dalle.copy_head
    if head is not None:  # the copy head's bonus on the source token, kept as it is added
        add_bonus = head.forward

        def kept(normed, logits, first, **inputs):
            out = add_bonus(normed, logits, first, **inputs)
            index = inputs["source_codes"][:, first : first + out.shape[1], None]
            bonus.append((out.gather(-1, index) - logits.gather(-1, index))[..., 0])
            return out

        head.forward = kept
    masks = slot_masks(pipeline.grid[0], pipeline.image_size)
    totals: dict[tuple[str, str], list[float]] = {}
    for index in range(min(args.stories, len(stories))):
        story = stories[index]
        frames = torch.as_tensor(np.asarray(codes[index]), dtype=torch.long)  # (L, N)
        length = frames.shape[0]
        story_tokens = pipeline.story_tokens([story["captions"]])[0]
        text = pipeline.tokenizer.encode(story["captions"]).ids
        bonus.clear()
        source = frames[:1].expand(length, -1)
        _, logits = model(text, frames, story=story_tokens, source=source, source_rows=torch.arange(length) > 0)
        truth = logits.float().softmax(-1).gather(-1, frames[..., None])[..., 0]  # (L, N)
        given = bonus[0] if bonus else torch.zeros_like(truth)  # (L, N)
        for frame in range(1, length):
            copyable = frames[frame] == frames[0]
            for slot, group in slot_groups(story["annotation"], frame).items():
                for kind, where in (("copyable", masks[slot] & copyable), ("changed", masks[slot] & ~copyable)):
                    total = totals.setdefault((group, kind), [0, 0.0, 0.0])
                    total[0] += int(where.sum())
                    total[1] += float(truth[frame][where].sum())
                    total[2] += float(given[frame][where].sum())
    print(f"{'group':24s} {'tokens':>7s} {'p_true':>7s}" + (f" {'copy_bonus':>10s}" if head is not None else ""))
    for (group, kind), (count, p_true, given) in sorted(totals.items()):
        if count:
            line = f"{group + ', ' + kind:24s} {count:7d} {p_true / count:7.3f}"
            print(line + (f" {given / count:10.2f}" if head is not None else ""))


if __name__ == "__main__":
    main()
