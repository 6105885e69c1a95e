"""An exponential moving average of a model's weights: `shadow = decay * shadow + (1 - decay) * weight`."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Keeps a float32 shadow copy of every floating-point tensor of `model.state_dict()`.

    `update(model)` after each optimizer step; `copy_to(model)` writes the averaged weights into a model of the
    same architecture (the exported model). Integer buffers (counters) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay {decay!r}: expected 0 <= decay < 1")
        self.decay = decay
        self.shadow = {key: value.detach().clone().float() for key, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if value.is_floating_point():
                shadow.mul_(self.decay).add_(value.detach().float(), alpha=1.0 - self.decay)
            else:
                shadow.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        model.load_state_dict({key: self.shadow[key].to(state[key].dtype) for key in state}, strict=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"EMA state does not match the model: missing {missing}, unexpected {unexpected}")
        self.shadow = {key: state[key].detach().clone().float() for key in self.shadow}
