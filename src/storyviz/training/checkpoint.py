"""Checkpoints of a run: `checkpoints/step-XXXXXXX/` = the model in the self-describing format + training_state.pt.

training_state.pt holds only tensors and plain containers, so it loads with `torch.load(weights_only=True)`:
    {"step", "data_position", "optimizer", "extras", "ema" (or None), "rng": [per rank], "schedule", "world_size"}
A checkpoint folder is written to a temporary folder and renamed into place, so it is whole or absent. On
resume the newest one that loads is used; one that fails to load is reported and skipped.
"""

from __future__ import annotations

import random
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from storyviz.files import atomic_dir
from storyviz.weights import WeightsError, load_state_dict_strict, read_safetensors, read_weights_config

STATE_NAME = "training_state.pt"
_STEP_FOLDER = re.compile(r"^step-(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint of a run, oldest first; temporary folders are ignored."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_FOLDER.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def remove_partial_checkpoints(run_dir: str | Path) -> None:
    """Deletes temporary folders left by a process killed while it wrote a checkpoint."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def warn(message: str) -> None:
    """A warning on stderr, shown even with --quiet."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


# ---- random number generators ----


def rng_state() -> dict[str, Any]:
    """The state of python's, numpy's and torch's generators as tensors and plain values."""
    version, internal, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- save / load ----


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, state: dict[str, Any]) -> Path:
    """Writes `checkpoints/step-XXXXXXX/` atomically: the model via save_pretrained, then training_state.pt."""
    path = Path(run_dir) / "checkpoints" / checkpoint_name(step)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, extra={"training_step": step})
        torch.save(state, tmp / STATE_NAME)
    return path


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Deletes all but the newest `keep` checkpoints (keep <= 0 keeps them all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Checkpoint:
    step: int
    path: Path
    model_state: dict[str, torch.Tensor]
    model_config: dict[str, Any]
    state: dict[str, Any]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Reads one checkpoint folder; raises WeightsError naming the file when any part of it is unreadable."""
    path = Path(path)
    config = read_weights_config(path)
    model_state = read_safetensors(path / "model.safetensors")
    state_path = path / STATE_NAME
    if not state_path.is_file():
        raise WeightsError(f"{state_path}: missing")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file raises one of several types
        raise WeightsError(f"{state_path}: cannot be read ({type(error).__name__}: {error})") from None
    for field in ("step", "data_position", "optimizer", "rng"):
        if not isinstance(state, dict) or field not in state:
            raise WeightsError(f"{state_path}: field {field!r} missing")
    return Checkpoint(int(state["step"]), path, model_state, config["config"], state)


def newest_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The newest checkpoint that loads; a newer one that fails to load is named in a warning and skipped."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return read_checkpoint(path)
        except WeightsError as error:
            warn(f"checkpoint {path} (step {step}) is unusable and is skipped: {error}")
    return None


def load_model_state(model: nn.Module, checkpoint: Checkpoint) -> None:
    load_state_dict_strict(model, checkpoint.model_state, str(checkpoint.path / "model.safetensors"))
