"""What a StoryDALL-E model reads when it picks a frame's first image token (sprites, teacher forcing).

    python benchmarks/first_token_probe.py BUNDLE --data DATA --codes CODES [--split val --stories 200]

BUNDLE is a storydalle bundle folder (`storyviz train storydalle`'s run_dir/model or an export); CODES the codes
folder with the cached MiniLM sentence embeddings (`minilm-{split}-plain.npy`, written by training). For frames
2-5 of the first STORIES stories (plain captions, frame 1 as the source), prints the cross-entropy of the true
first image token, which decides the frame's background, by kind of frame: `stay` (in frame 1's setting), `move`
(the frame whose caption says they go somewhere), `later` (after a move, the caption silent on it); with the
frame's own story token, another story's (`shuffled`), a zero story token, and no source frame.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from storyviz.data.codes import open_codes
from storyviz.data.store import open_dataset
from storyviz.models.storydalle import StoryDalle
from storyviz.text import TextTokenizer

KINDS = ("stay", "move", "later")


def frame_kind(settings: np.ndarray, index: int) -> str:
    if settings[index] == settings[0]:
        return "stay"
    return "move" if settings[index] != settings[index - 1] else "later"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="a storydalle bundle folder")
    parser.add_argument("--data", required=True)
    parser.add_argument("--codes", required=True, help="codes folder with the minilm-*-plain.npy caches")
    parser.add_argument("--split", default="val")
    parser.add_argument("--stories", type=int, default=200)
    args = parser.parse_args()
    bundle = Path(args.bundle)
    model = StoryDalle.from_pretrained(bundle / "transformer").eval()
    tokenizer = TextTokenizer.from_pretrained(bundle / "tokenizer")
    stories = open_dataset(args.data).split(args.split)
    codes = open_codes(args.codes).split(args.split)
    count = min(args.stories, len(stories))
    vectors = np.load(Path(args.codes) / f"minilm-{args.split}-plain.npy")[:count]
    captions = stories.caption_table(pronoun=False)[:count]
    shuffle = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    losses: dict[str, list[np.ndarray]] = {"true": [], "shuffled": [], "zero_story": [], "no_source": []}
    kinds = []
    with torch.no_grad():
        story = model.story_tokens(torch.from_numpy(vectors.astype(np.float32)))
        for index in range(count):
            frames = torch.as_tensor(np.asarray(codes[index]), dtype=torch.long)
            settings = np.asarray(stories[index]["labels"]["setting"])
            text = tokenizer.encode(list(captions[index])).ids[1:]
            source = frames[:1].expand(len(frames) - 1, -1)
            own = story[index, 1:]
            variants = {
                "true": (own, None),
                "shuffled": (story[shuffle[index], 1:], None),
                "zero_story": (torch.zeros_like(own), None),
                "no_source": (own, torch.zeros(len(frames) - 1, dtype=torch.bool)),
            }
            for name, (tokens, rows) in variants.items():
                _, logits = model(text, frames[1:], story=tokens, source=source, source_rows=rows)
                loss = F.cross_entropy(logits[:, 0].float(), frames[1:, 0], reduction="none")
                losses[name].append(loss.numpy())
            kinds += [frame_kind(settings, j) for j in range(1, len(frames))]
    kinds = np.array(kinds)
    print(json.dumps({"frames": {kind: int((kinds == kind).sum()) for kind in KINDS}}))
    for name, values in losses.items():
        values = np.concatenate(values)
        print(json.dumps({"story": name, **{kind: round(float(values[kinds == kind].mean()), 3) for kind in KINDS}}))


if __name__ == "__main__":
    main()
