"""The judge: a small CNN frame classifier with one head per label head of a data set.

A judge scores generated frames (which characters, which setting, what each drawn character looks like; digit,
colour and background for the digits set). Its config lists its heads with their classes, so a judge folder
describes itself; `storyviz.evaluation.judges.load_judge` refuses one whose stored held-out accuracy is below 98%.

    images (B, 3, H, W) in [-1, 1]
      -> stages of [conv3x3 -> GroupNorm -> SiLU -> conv3x3 stride 2 -> GroupNorm -> SiLU]   (B, C, H/2^k, W/2^k)
      -> adaptive average pool to a grid x grid map, flattened (position kept: left/centre/right slots matter)
      -> Linear -> SiLU = features (B, D)  (the space of fid_judge)
      -> one Linear head per label head: logits (B, num_classes)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class JudgeHead(Config):
    """One classification head: "multi" (multi-label, sigmoid) or "single" (one class, softmax)."""

    name: str = ""
    type: Literal["multi", "single"] = "single"
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class JudgeConfig(Config):
    image_size: int = 64
    widths: tuple[int, ...] = (16, 32, 64, 128)
    grid: int = 4  # the last feature map is pooled to grid x grid before the feature layer
    feature_dim: int = 256
    dropout: float = 0.0
    heads: tuple[JudgeHead, ...] = ()

    def __post_init__(self):
        names = [head.name for head in self.heads]
        if len(set(names)) != len(names):
            raise ConfigError(f"JudgeConfig.heads: duplicate head names in {names}")
        for head in self.heads:
            if not head.name or not head.classes:
                raise ConfigError(f"JudgeConfig.heads: head {head.name!r} needs a name and at least one class")

    @classmethod
    def heads_from_meta(cls, labels: dict) -> tuple[JudgeHead, ...]:
        """The heads of a data set's meta.json "labels": {head: {"type": "multi" | "single", "classes": [...]}}."""
        try:
            return tuple(
                JudgeHead(name=name, type=spec["type"], classes=tuple(str(c) for c in spec["classes"]))
                for name, spec in labels.items()
            )
        except (KeyError, TypeError) as error:
            expected = "{head: {type, classes}}"
            raise ConfigError(f"meta.json labels: expected {expected}, got {labels!r} ({error})") from None


PRESETS = {
    "tiny": JudgeConfig(image_size=32, widths=(8, 16), grid=2, feature_dim=32),
    "small": JudgeConfig(dropout=0.1),
}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class Judge(nn.Module, Pretrained):
    """Frame classifier: images (B, 3, H, W) in [-1, 1] -> {head: logits (B, num_classes)}."""

    model_type = "judge"
    config_class = JudgeConfig

    def __init__(self, config: JudgeConfig):
        super().__init__()
        if not config.heads:
            raise ConfigError("JudgeConfig.heads is empty; take the heads from the data set (heads_from_meta)")
        self.config = config
        layers: list[nn.Module] = []
        channels = 3
        for width in config.widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), _norm(width), nn.SiLU()]
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), _norm(width), nn.SiLU()]
            channels = width
        self.trunk = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(config.grid)
        self.feature = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(channels * config.grid**2, config.feature_dim),
            nn.SiLU(),
        )
        # ModuleDict keys cannot hold dots ("left.body"); heads are kept in config order
        self.heads = nn.ModuleList(nn.Linear(config.feature_dim, len(head.classes)) for head in config.heads)

    @property
    def head_names(self) -> list[str]:
        return [head.name for head in self.config.heads]

    def _check(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise ValueError(f"judge expects images (B, 3, {size}, {size}) in [-1, 1], got {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> penultimate features (B, feature_dim)."""
        self._check(images)
        return self.feature(self.pool(self.trunk(images)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] -> {head: logits (B, num_classes)}."""
        return self.outputs(images)[1]

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images (B, 3, H, W) in [-1, 1] -> (features (B, feature_dim), {head: logits (B, num_classes)})."""
        features = self.features(images)
        return features, {head.name: layer(features) for head, layer in zip(self.config.heads, self.heads)}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] -> {head: multi-hot uint8 (B, C) (sigmoid >= 0.5) or class int64 (B,)}."""
        logits = self(images)
        out = {}
        for head in self.config.heads:
            value = logits[head.name]
            out[head.name] = (value >= 0).to(torch.uint8) if head.type == "multi" else value.argmax(dim=-1)
        return out
