"""Using judges: predicting on uint8 frames, measuring and storing held-out accuracy, and refusing weak judges.

A judge folder's config.json carries, besides the model config,
    "heldout_accuracy": {head: accuracy on real held-out frames}, "heldout_split": "val", "heldout_frames": N
written by `certify_judge` after training. `load_judge` refuses a judge without them or below `min_accuracy`
on any head. For a "multi" head the accuracy is the per-frame exact set match (frame_acc).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from storyviz.evaluation.metrics import heldout_accuracy
from storyviz.evaluation.scripted_judge import ScriptedJudge, load_scripted_judge
from storyviz.models.judge import Judge
from storyviz.progress import progress, say
from storyviz.registry import resolve_model_dir
from storyviz.weights import CONFIG_NAME, WeightsError, read_weights_config, update_weights_config

MIN_ACCURACY = 0.98


class JudgeError(ValueError):
    """A judge that cannot be trusted (no stored held-out accuracy, or below the bar), or does not fit the data."""


def frames_to_images(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> float images (N, 3, size, size) in [-1, 1] (antialiased bilinear resize)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True).clamp(-1, 1)
    return images


@torch.no_grad()
def judge_frames(judge: Judge, frames: np.ndarray, batch_size: int = 128) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Runs the judge on uint8 frames (N, H, W, 3).

    Returns ({head: multi-hot uint8 (N, C) or class int64 (N,)}, penultimate features float64 (N, D)).
    """
    judge.eval()
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in judge.head_names}
    features = []
    starts = range(0, len(frames), batch_size)
    for start in progress(starts, desc="judge"):
        images = frames_to_images(frames[start : start + batch_size], judge.config.image_size)
        feature, logits = judge.outputs(images)
        features.append(feature.double().numpy())
        for head in judge.config.heads:
            value = logits[head.name]
            value = (value >= 0).to(torch.uint8) if head.type == "multi" else value.argmax(dim=-1)
            predictions[head.name].append(value.numpy())
    if not features:
        raise ValueError("no frames to judge")
    return {head: np.concatenate(value) for head, value in predictions.items()}, np.concatenate(features)


def split_frames(data: Any, split: str, limit: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All frames of a split with their labels: (uint8 (N, H, W, 3), {head: (N, C) or (N,)}); `limit` stories."""
    stories = data.split(split)
    count = len(stories) if limit is None else min(limit, len(stories))
    frames, labels = [], {}
    for index in progress(range(count), desc=f"read {split}"):
        story = stories[index]
        frames.append(np.asarray(story["frames"]))
        for head, value in story["labels"].items():
            labels.setdefault(head, []).append(np.asarray(value))
    if not frames:
        raise ValueError(f"split {split!r} of {data.meta.get('name', 'the data set')} has no stories")
    return np.concatenate(frames), {head: np.concatenate(value) for head, value in labels.items()}


def check_heads(judge: Judge, labels: dict, where: str) -> None:
    """Raises JudgeError unless the judge has every label head of the data with the same classes."""
    heads = {head.name: head for head in judge.config.heads}
    for name, spec in labels.items():
        if name not in heads:
            raise JudgeError(f"{where}: the judge has no head {name!r} (its heads: {', '.join(heads)})")
        if list(heads[name].classes) != [str(c) for c in spec["classes"]] or heads[name].type != spec["type"]:
            raise JudgeError(f"{where}: head {name!r} of the judge has other classes or type than the data set")


def measure_accuracy(
    judge: Judge, data: Any, split: str = "val", limit: int | None = None
) -> tuple[dict[str, float], int]:
    """Per-head accuracy of the judge on the real frames of `split` (multi heads: per-frame exact set match).

    Returns ({head: accuracy}, number of frames).
    """
    check_heads(judge, data.meta["labels"], f"data set {data.meta.get('name', '')!r}")
    frames, labels = split_frames(data, split, limit)
    predictions, _ = judge_frames(judge, frames)
    return heldout_accuracy(predictions, labels), len(frames)


def certify_judge(model_dir: str | Path, data: Any, split: str = "val", limit: int | None = None) -> dict[str, float]:
    """Measures the judge in `model_dir` on real `split` frames and stores the result in its config.json.

    Other fields of config.json (the training step, say) are kept.
    """
    judge = Judge.from_pretrained(model_dir)
    accuracy, frames = measure_accuracy(judge, data, split, limit)
    fields = {"heldout_accuracy": accuracy, "heldout_split": split, "heldout_frames": frames}
    update_weights_config(model_dir, {**fields, "data": data.meta.get("name", "")})
    say(f"judge {model_dir}: held-out accuracy on {split} ({frames} frames): " + json.dumps(accuracy))
    return accuracy


def load_judge(name_or_path: str | Path, min_accuracy: float = MIN_ACCURACY) -> Judge | ScriptedJudge:
    """Loads a judge whose stored held-out accuracy is >= min_accuracy on every head: a storyviz judge folder
    (or bundled name), or a TorchScript file (`.pt`, `.ts`) with its JSON description (see scripted_judge.py)."""
    path = Path(name_or_path)
    if path.suffix in (".pt", ".ts", ".jit") and path.is_file():
        judge, description = load_scripted_judge(path)
        check_accuracy(description, judge.config.heads, path.with_suffix(".json"), min_accuracy)
        return judge
    directory = resolve_model_dir(name_or_path)
    config = read_weights_config(directory)
    where = directory / CONFIG_NAME
    if config["model_type"] != Judge.model_type:
        raise WeightsError(f"{where}: model_type is {config['model_type']!r}, expected 'judge'")
    judge = Judge.from_pretrained(directory)
    check_accuracy(config, judge.config.heads, where, min_accuracy)
    return judge


def check_accuracy(stored: dict, heads, where: Path, min_accuracy: float) -> None:
    """Raises JudgeError unless `stored["heldout_accuracy"]` reaches min_accuracy on every head."""
    accuracy = stored.get("heldout_accuracy")
    if not isinstance(accuracy, dict) or not accuracy:
        raise JudgeError(f"{where}: no held-out accuracy stored; measure it first (certify_judge) before judging")
    for head in heads:
        value = accuracy.get(head.name)
        if value is None or not np.isfinite(value):
            raise JudgeError(f"{where}: no held-out accuracy stored for head {head.name!r}")
        if value < min_accuracy:
            raise JudgeError(
                f"{where}: head {head.name!r} has held-out accuracy {value:.4f} on {stored.get('heldout_split', '?')}, "
                f"below the required {min_accuracy:.2f}; this judge is refused"
            )
