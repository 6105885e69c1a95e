"""Probes: how well each frame's setting can be read from a StoryDALL-E model's story tokens (sprites).

    python benchmarks/story_token_probe.py TRANSFORMER_DIR --data DATA --codes CODES [--train 3000 --val 1000]

TRANSFORMER_DIR is the `transformer` folder of a storydalle bundle; CODES the codes folder holding the cached MiniLM
sentence embeddings (`minilm-{split}-plain.npy`, written by training). Linear and MLP probes are fitted on `train`
stories and scored on frames 2-5 of `val` stories, overall and where the story has moved since frame 1; the same
probes on the frame's own caption vector and on all captions of the story (+ the frame's index) show what the
captions hold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from storyviz.data.store import open_dataset
from storyviz.models.storydalle import StoryDalle


def load_split(model, data, codes: Path, split: str, count: int):
    """(caption vectors (S, L, E), story tokens (S, L, D), settings (S, L))."""
    sentences = torch.from_numpy(np.load(codes / f"minilm-{split}-plain.npy")[:count].astype(np.float32))
    stories = data.split(split)
    settings = np.stack([np.asarray(stories[i]["labels"]["setting"]) for i in range(len(sentences))])
    with torch.no_grad():
        tokens = model.story_tokens(sentences)
    return sentences, tokens, torch.from_numpy(settings).long()


def fit(probe: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float) -> nn.Module:
    optimizer = torch.optim.Adam(probe.parameters(), lr, weight_decay=1e-4)
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(256):
            optimizer.zero_grad()
            F.cross_entropy(probe(x[batch]), y[batch]).backward()
            optimizer.step()
    return probe


def score(kind: str, train_x, val_x, train_y, val_y) -> dict[str, float]:
    train_x, val_x = train_x.flatten(0, 1), val_x.flatten(0, 1)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    classes = int(train_y.max()) + 1
    width = train_x.shape[1]
    probe = (
        nn.Linear(width, classes)
        if kind == "linear"
        else nn.Sequential(nn.Linear(width, 512), nn.GELU(), nn.Linear(512, classes))
    )
    fit(probe, train_x, train_y.flatten(), epochs=30, lr=1e-2 if kind == "linear" else 1e-3)
    with torch.no_grad():
        right = (probe(val_x).argmax(-1).view(val_y.shape) == val_y)[:, 1:]
    moved = (val_y != val_y[:, :1])[:, 1:]
    return {
        "frames_2_on": round(right.float().mean().item(), 3),
        "after_a_move": round(right[moved].float().mean().item(), 3),
    }


def with_all_captions(sentences: torch.Tensor) -> torch.Tensor:
    """(S, L, E) -> (S, L, L*E + L): every caption of the story and the frame's index, one-hot."""
    stories, length, _ = sentences.shape
    everything = sentences.reshape(stories, 1, -1).expand(-1, length, -1)
    return torch.cat([everything, torch.eye(length).expand(stories, -1, -1)], dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("transformer", help="the transformer folder of a storydalle bundle")
    parser.add_argument("--data", required=True)
    parser.add_argument("--codes", required=True, help="codes folder with the minilm-*-plain.npy caches")
    parser.add_argument("--train", type=int, default=3000, help="train stories the probes are fitted on")
    parser.add_argument("--val", type=int, default=1000, help="val stories they are scored on")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = StoryDalle.from_pretrained(args.transformer).eval()
    data = open_dataset(args.data)
    train_s, train_t, train_y = load_split(model, data, Path(args.codes), "train", args.train)
    val_s, val_t, val_y = load_split(model, data, Path(args.codes), "val", args.val)
    inputs = {
        "story token": (train_t, val_t),
        "own caption": (train_s, val_s),
        "all captions + frame index": (with_all_captions(train_s), with_all_captions(val_s)),
    }
    for name, (train_x, val_x) in inputs.items():
        for kind in ("linear", "mlp"):
            print(json.dumps({"input": name, "probe": kind, **score(kind, train_x, val_x, train_y, val_y)}))


if __name__ == "__main__":
    main()
