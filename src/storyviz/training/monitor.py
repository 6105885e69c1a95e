"""What a run reports: `metrics.jsonl` for scripts, TensorBoard event files, and a progress bar (rank 0 only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from storyviz.files import write_text_atomic
from storyviz.progress import progress

METRICS_NAME = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The logged steps of a run; a line cut short by a killed process is skipped."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keeps the lines up to `step` (the step a run resumes from), so the file reads as one consistent run."""
    path = Path(run_dir) / METRICS_NAME
    if path.exists():
        rows = [row for row in read_metrics(run_dir) if row["step"] <= step]
        write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


class Monitor:
    """Logs on rank 0; a no-op elsewhere. `start_step` is the step the run starts (or resumes) from."""

    def __init__(self, run_dir: Path, start_step: int, total_steps: int, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self.writer = None
        self.bar = None
        self._last_time = time.perf_counter()
        self._last_step = start_step
        if not enabled:
            return
        truncate_metrics(run_dir, start_step)
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when a run starts

        # purge_step hides events past the resumed step that an interrupted run left behind
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self.bar = progress(total=total_steps, initial=start_step, unit="step", desc="train")

    def step(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def log(self, step: int, numbers: dict[str, float], items_per_step: int) -> dict[str, Any]:
        """Writes one metrics.jsonl line and the TensorBoard scalars of `step`; returns the row."""
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        steps = max(step - self._last_step, 1)
        self._last_time, self._last_step = now, step
        row: dict[str, Any] = {"step": step}
        row.update({key: _plain(value) for key, value in numbers.items()})
        row["steps_per_second"] = steps / elapsed
        row["items_per_second"] = steps * items_per_step / elapsed
        if not self.enabled:
            return row
        with open(self.run_dir / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
        for key, value in row.items():
            if key != "step" and isinstance(value, float) and math.isfinite(value):
                tag = key if "/" in key else (f"throughput/{key}" if key.endswith("per_second") else f"train/{key}")
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()
        return row

    def images(self, step: int, images: torch.Tensor) -> None:
        """Sample images (B, 3, H, W) in [0, 1] to TensorBoard."""
        if self.enabled and images is not None and len(images):
            self.writer.add_images("samples", images.detach().float().clamp(0, 1).cpu(), step)
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value
