"""The field's judge-based metrics as pure functions of predicted and true labels (numpy in, float out).

Conventions (the shared data API): a "multi" label head is a multi-hot array (N, C) (values 0/1); a "single" head
is an int array (N,) with -1 = unknown. Frames whose truth is unknown are left out of a metric; a metric over no
frames is NaN (reported as null), never a made-up number.

Metric names used in reports (exactly): char_f1, frame_acc, setting_acc, appearance_consistency, fid_inception,
fid_judge, digit_acc, color_acc, background_acc, judge_agreement. `judge_metrics` maps a data set's label heads to
the first four and the digits ones; `judge_agreement` compares the judge's reading of two sets of frames (a
tokenizer's reconstructions with the originals); FID lives in storyviz.evaluation.fid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

SLOTS = ("left", "centre", "right")
ATTRIBUTES = ("body", "colour", "accessory")
# digits label head -> metric name
DIGITS_METRICS = {"digit": "digit_acc", "colour": "color_acc", "background": "background_acc"}
METRIC_NAMES = (
    "char_f1",
    "frame_acc",
    "setting_acc",
    "appearance_consistency",
    "fid_inception",
    "fid_judge",
    "digit_acc",
    "color_acc",
    "background_acc",
    "judge_agreement",
)
# the heads that say what a frame shows (who and where; which digit, colour and background), for judge_agreement
IDENTITY_HEADS = ("characters", "setting", "digit", "colour", "background")


def _multi_hot(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checks shapes; returns boolean (N, C) arrays, keeping only frames whose truth is fully known (0/1)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(
            f"expected predicted and true multi-hot labels of the same shape (N, C), got {pred.shape} and {true.shape}"
        )
    known = np.all((true == 0) | (true == 1), axis=1)
    return pred[known].astype(bool), true[known].astype(bool)


def char_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Micro-averaged F1 over character labels: 2 TP / (2 TP + FP + FN), counted over all frames and characters.

    pred, true: multi-hot (N, C). When neither side names any character (TP + FP + FN = 0) the prediction agrees
    with the truth everywhere and F1 is 1.0; with no frames it is NaN.
    """
    pred, true = _multi_hot(pred, true)
    if len(true) == 0:
        return float("nan")
    tp = np.sum(pred & true)
    fp = np.sum(pred & ~true)
    fn = np.sum(~pred & true)
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else float(2 * tp / denominator)


def frame_acc(pred: np.ndarray, true: np.ndarray) -> float:
    """Share of frames whose whole predicted character set equals the truth (an empty set matches an empty set).

    pred, true: multi-hot (N, C). Often printed as "Char-Acc" in papers.
    """
    pred, true = _multi_hot(pred, true)
    if len(true) == 0:
        return float("nan")
    return float(np.mean(np.all(pred == true, axis=1)))


def label_acc(pred: np.ndarray, true: np.ndarray) -> float:
    """Accuracy of a single-label head: pred, true int (N,); frames with true == -1 (unknown) are left out."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(
            f"expected predicted and true labels of the same shape (N,), got {pred.shape} and {true.shape}"
        )
    known = true >= 0
    if not known.any():
        return float("nan")
    return float(np.mean(pred[known] == true[known]))


setting_acc = label_acc


def judge_agreement(pred: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Share of frames that the judge reads exactly as it reads the reference frames on every identity head
    present (IDENTITY_HEADS: the whole character set and the setting on sprites; digit, colour and background on
    digits). pred, reference: the judge's predictions {head: (N, C) multi-hot or (N,) int} on the same N frames.
    """
    heads = [head for head in IDENTITY_HEADS if head in pred and head in reference]
    if not heads:
        raise ValueError(f"no identity head ({', '.join(IDENTITY_HEADS)}) among {sorted(pred)}")
    same = None
    for head in heads:
        a, b = np.asarray(pred[head]), np.asarray(reference[head])
        if a.shape != b.shape:
            raise ValueError(f"head {head!r}: predictions of shape {a.shape} and {b.shape}")
        equal = np.all(a == b, axis=1) if a.ndim == 2 else a == b
        same = equal if same is None else same & equal
    return float(np.mean(same)) if len(same) else float("nan")


def slot_tuples(labels: dict[str, np.ndarray], slots: Sequence[str] = SLOTS) -> list[Counter]:
    """Per frame, the multiset of (body, colour, accessory) class tuples of the occupied screen slots.

    labels: {"left.body": (N,), "left.colour": (N,), ...} ints. A slot is occupied when its body class is not 0
    ("none"). Returns N Counters of tuples; a frame with an unknown (-1) attribute gets None.
    """
    count = len(labels[f"{slots[0]}.body"])
    frames: list[Counter | None] = []
    for index in range(count):
        values = [[int(labels[f"{slot}.{name}"][index]) for name in ATTRIBUTES] for slot in slots]
        if any(value < 0 for slot_values in values for value in slot_values):
            frames.append(None)
            continue
        frames.append(Counter(tuple(slot_values) for slot_values in values if slot_values[0] != 0))
    return frames


def appearance_consistency(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], slots=SLOTS) -> float:
    """Do the characters drawn have the attributes of the characters that should be there?

    Per frame, P = the multiset of predicted (body, colour, accessory) tuples over the occupied slots and T the
    ground-truth multiset (slots ignored: a character may stand anywhere). The frame scores
    |P ∩ T| / max(|P|, |T|) (multiset intersection; 1.0 when both are empty, so drawing an extra character or
    missing one costs as much as drawing one wrongly). The metric is the mean over frames with fully known truth.
    For `test_unseen`, T holds the attributes shown in the source frame, so this scores appearance carried over
    from frame 1 for characters the model never saw by name.

    pred, true: {"left.body": (N,), ..., "right.accessory": (N,)} int class indices.
    """
    scores = appearance_by_frame(pred, true, slots)
    known = scores[~np.isnan(scores)]
    return float(known.mean()) if len(known) else float("nan")


def appearance_by_frame(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], slots=SLOTS) -> np.ndarray:
    """Each frame's appearance score of `appearance_consistency` (N,) float, NaN where the truth is not known."""
    predicted, truth = slot_tuples(pred, slots), slot_tuples(true, slots)
    scores = np.full(len(truth), np.nan)
    for index, (frame_pred, frame_true) in enumerate(zip(predicted, truth)):
        if frame_true is None:
            continue
        frame_pred = frame_pred or Counter()
        size = max(sum(frame_pred.values()), sum(frame_true.values()))
        scores[index] = 1.0 if size == 0 else sum((frame_pred & frame_true).values()) / size
    return scores


def has_slot_heads(heads: Sequence[str], slots: Sequence[str] = SLOTS) -> bool:
    return all(f"{slot}.{name}" in heads for slot in slots for name in ATTRIBUTES)


def judge_metrics(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, float]:
    """All judge-based metrics that apply to these label heads.

    pred, true: {head: (N, C) multi-hot or (N,) int} for the same frames. "characters" gives char_f1 and
    frame_acc, "setting" gives setting_acc, the per-slot heads give appearance_consistency, and the digits heads
    ("digit", "colour", "background" without characters) give digit_acc, color_acc, background_acc.
    """
    missing = sorted(set(true) - set(pred))
    if missing:
        raise ValueError(f"predictions missing for label head(s) {missing}")
    out: dict[str, float] = {}
    if "characters" in true:
        out["char_f1"] = char_f1(pred["characters"], true["characters"])
        out["frame_acc"] = frame_acc(pred["characters"], true["characters"])
    if "setting" in true:
        out["setting_acc"] = setting_acc(pred["setting"], true["setting"])
    if has_slot_heads(list(true)):
        out["appearance_consistency"] = appearance_consistency(pred, true)
    if "digit" in true:
        for head, name in DIGITS_METRICS.items():
            if head in true:
                out[name] = label_acc(pred[head], true[head])
    return out


def by_position(
    pred: dict[str, np.ndarray], true: dict[str, np.ndarray], positions: np.ndarray
) -> dict[int, dict[str, float]]:
    """`judge_metrics` per frame position: {position (1-based frame number): metrics of the frames there}.

    positions: (N,) 0-based frame index of each frame in its story; frame 2, 3, 4, 5 of a story are keys 2..5.
    """
    positions = np.asarray(positions)
    out = {}
    for position in sorted(set(positions.tolist())):
        keep = positions == position
        out[int(position) + 1] = judge_metrics(
            {head: np.asarray(value)[keep] for head, value in pred.items()},
            {head: np.asarray(value)[keep] for head, value in true.items()},
        )
    return out


def heldout_accuracy(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, float]:
    """A judge's accuracy per head: single heads = label accuracy, multi heads = per-frame exact set match."""
    out = {}
    for head, truth in true.items():
        truth = np.asarray(truth)
        out[head] = frame_acc(pred[head], truth) if truth.ndim == 2 else label_acc(pred[head], truth)
    return out
