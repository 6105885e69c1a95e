"""The toy task: the ToyModel classifier on a synthetic set of coloured squares (class = colour).

`storyviz train toy --preset tiny --data synthetic --out RUN` trains it in seconds; it exercises every part of
the training loop (processes, resume, checkpoints, logging) before the real models exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from storyviz.config import ConfigError
from storyviz.models.toy import PRESETS, ToyConfig, ToyModel
from storyviz.training.task import Task, TrainConfig

# RGB colours of the classes, in [-1, 1]
COLOURS = np.array(
    [[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1], [1, 1, 1], [-1, -1, -1]],
    dtype=np.float32,
)
SPLIT_SIZES = {"train": 512, "val": 128, "test": 128}
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


class SyntheticSquares(Dataset):
    """Grey noisy backgrounds with one coloured square each; item i is the same on every call and machine.

    item -> {"images": float32 (C, H, W) in [-1, 1], "labels": int64 scalar (the colour's class)}.
    """

    def __init__(self, config: ToyConfig, size: int, seed: int):
        if config.num_classes > len(COLOURS):
            raise ConfigError(f"toy num_classes={config.num_classes}: the synthetic set has {len(COLOURS)} colours")
        if config.channels != 3:
            raise ConfigError(f"toy channels={config.channels}: the synthetic set has 3 (RGB)")
        rng = np.random.default_rng(seed)
        side = config.image_size
        images = rng.normal(0.0, 0.2, size=(size, 3, side, side)).astype(np.float32)
        labels = rng.integers(0, config.num_classes, size=size)
        for i in range(size):
            width = int(rng.integers(max(2, side // 4), max(3, side // 2) + 1))
            top, left = rng.integers(0, side - width + 1, size=2)
            images[i, :, top : top + width, left : left + width] = COLOURS[labels[i], :, None, None]
        self.images = torch.from_numpy(images.clip(-1, 1))
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[index], "labels": self.labels[index]}


class ToyTask(Task):
    """Cross-entropy classification of SyntheticSquares by ToyModel."""

    name = "toy"
    model_presets = PRESETS
    train_presets = {
        "tiny": TrainConfig(
            steps=200, batch_size=16, lr=3e-3, warmup_steps=10, log_every=10, checkpoint_every=50, keep_checkpoints=2
        ),
        "small": TrainConfig(steps=1000, batch_size=32, lr=2e-3, warmup_steps=50, log_every=20, checkpoint_every=200),
    }

    def __init__(self, model_config: ToyConfig, data: str):
        super().__init__(model_config, data)
        if data != "synthetic":
            raise ConfigError(f"toy task: --data {data!r} is not supported; the toy task reads only 'synthetic'")

    def build_model(self) -> ToyModel:
        return ToyModel(self.model_config)

    def dataset(self, split: str) -> SyntheticSquares:
        if split not in SPLIT_SIZES:
            raise ConfigError(f"toy task: unknown split {split!r}; available: {', '.join(SPLIT_SIZES)}")
        return SyntheticSquares(self.model_config, SPLIT_SIZES[split], SPLIT_SEEDS[split])

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], step: int, extras: nn.ModuleDict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["images"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        accuracy = (logits.argmax(dim=-1) == batch["labels"]).float().mean()
        return loss, {"accuracy": accuracy.item()}

    def sample_images(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The first 8 inputs (B, 3, H, W) in [0, 1]."""
        return (batch["images"][:8] + 1) / 2
