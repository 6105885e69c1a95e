"""A tiny image classifier that exercises save/load and the training loop before the real models exist."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from storyviz.config import Config
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class ToyConfig(Config):
    image_size: int = 16
    channels: int = 3
    hidden: int = 32
    num_classes: int = 4


PRESETS = {
    "tiny": ToyConfig(),
    "small": ToyConfig(image_size=32, hidden=64),
}


class ToyModel(nn.Module, Pretrained):
    """images (B, C, H, W) in [-1, 1] -> class logits (B, num_classes)."""

    model_type = "toy"
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(config.channels, config.hidden, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(config.hidden)
        self.head = nn.Linear(config.hidden, config.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(images)).mean(dim=(2, 3))
        return self.head(self.norm(features))
