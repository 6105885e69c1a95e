"""The contract between the one training loop and each kind of model.

A `Task` says how to build a model from its config, which data it reads, and how to compute its loss.
The loop (storyviz.training.loop) owns everything else: processes, optimiser, schedule, precision, EMA,
checkpoints, resume, logging. Tasks are listed in `TASKS` by import path and selected by name
(`storyviz train NAME`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from storyviz.config import Config, ConfigError


@dataclass(frozen=True)
class TrainConfig(Config):
    """One training run. `batch_size` is the global batch of one optimiser step (all processes and all
    accumulation micro-steps together); it must divide by world_size * grad_accum."""

    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW (beta1, beta2)
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.0  # 0 disables the EMA of the weights
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 0  # 0: no sample images in TensorBoard
    num_workers: int = 0
    # a model folder or checkpoint whose weights start a new run (same model config; the optimiser starts
    # afresh; of a bundle, the part of the run's model type), e.g. a VQGAN trained with L1/L2 that a run with the
    # discriminator refines; unused on --resume
    init_from: str = ""


class Task(ABC):
    """What the training loop needs to know about one kind of model.

    Subclasses set `name`, `model_presets` and `train_presets` (the same preset names in both), and are
    built as `Task(model_config, data_path)`.
    """

    name: ClassVar[str]
    model_presets: ClassVar[dict[str, Config]]
    train_presets: ClassVar[dict[str, TrainConfig]]

    def __init__(self, model_config: Config, data: str):
        self.model_config = model_config
        self.data = data

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model that is trained and exported (a `Pretrained` module)."""

    def build_extras(self) -> dict[str, nn.Module]:
        """Modules trained alongside but not exported (a GAN discriminator, say); checkpointed with the run."""
        return {}

    @abstractmethod
    def dataset(self, split: str) -> Dataset:
        """The items of one split; `collate` turns a list of them into a batch."""

    def collate(self, items: list[Any]) -> Any:
        return torch.utils.data.default_collate(items)

    @abstractmethod
    def loss(
        self, model: nn.Module, batch: Any, step: int, extras: nn.ModuleDict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of one micro-batch and named numbers to log."""

    def trainable_parameters(self, model: nn.Module, extras: nn.ModuleDict) -> Iterable[nn.Parameter]:
        """Parameters the optimiser updates (all that require grad, by default; prompt tuning narrows this)."""
        return [p for module in (model, extras) for p in module.parameters() if p.requires_grad]

    def export(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        """Writes the trained model for use (`run_dir/model`): by default `model.save_pretrained`. Tasks whose
        product needs more than the trained network (a tokenizer, a frozen first stage) write a bundle here."""
        model.save_pretrained(directory, extra=extra)

    def sample_images(self, model: nn.Module, batch: Any) -> torch.Tensor | None:
        """Optional images (B, 3, H, W) in [0, 1] for TensorBoard."""
        return None


# task name -> "module:Class"
TASKS: dict[str, str] = {
    "toy": "storyviz.training.tasks.toy:ToyTask",
    "vqgan": "storyviz.training.tasks.tokenizers:VQGANTask",
    "dvae": "storyviz.training.tasks.tokenizers:DVAETask",
    "judge": "storyviz.training.tasks.judge:JudgeTask",
    "arldm-vae": "storyviz.training.tasks.arldm:ARLDMVAETask",
    "arldm": "storyviz.training.tasks.arldm:ARLDMTask",
    "dalle": "storyviz.training.tasks.dalle:DalleTask",
    "storydalle": "storyviz.training.tasks.storydalle:StoryDalleTask",
    "scorer": "storyviz.training.tasks.scorer:ScorerTask",
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ConfigError(f"unknown model {name!r} to train; available: {', '.join(sorted(TASKS))}")
    module_name, class_name = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
