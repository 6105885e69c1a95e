"""Learning-rate schedule: linear warm-up, then cosine decay to `lr * min_lr_ratio` (as in nanoGPT).

The schedule is a pure function of the step, so it needs no state of its own: a resumed run recomputes it, and a
run resumed with a larger `steps` stretches the remaining cosine to the new end.
"""

from __future__ import annotations

import math


def lr_at(step: int, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The learning rate of optimizer step `step` (0-based: the update that turns step weights into step + 1).

    warm-up:  lr * (step + 1) / (warmup_steps + 1)              for step < warmup_steps
    decay:    min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2    t = (step - warmup) / (total - warmup), clamped to 1
    """
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    min_lr = lr * min_lr_ratio
    span = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / span) if span > 0 else 1.0
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
