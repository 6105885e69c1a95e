"""The judge-based metrics against cases computed by hand."""

import math

import numpy as np
import pytest

from storyviz.evaluation.metrics import (
    appearance_by_frame,
    appearance_consistency,
    by_position,
    char_f1,
    frame_acc,
    heldout_accuracy,
    judge_agreement,
    judge_metrics,
    label_acc,
    setting_acc,
)

# 4 frames, 3 characters. Frame 3 has no characters in truth and none predicted.
TRUE = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)
PRED = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)


def test_char_f1_by_hand():
    # TP = 1 + 1 + 2 = 4; FP = 1 (frame 1, character 2); FN = 1 (frame 0, character 2)
    assert char_f1(PRED, TRUE) == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))


def test_frame_acc_counts_empty_frames_when_both_empty():
    # frames 2 and 3 match exactly (3 is empty on both sides)
    assert frame_acc(PRED, TRUE) == pytest.approx(2 / 4)


def test_empty_predictions():
    empty = np.zeros_like(TRUE)
    assert char_f1(empty, TRUE) == 0.0  # TP = 0, FN = 5
    assert frame_acc(empty, TRUE) == pytest.approx(1 / 4)  # only the frame without characters


def test_no_characters_anywhere():
    nothing = np.zeros((3, 4), dtype=np.uint8)
    assert char_f1(nothing, nothing) == 1.0
    assert frame_acc(nothing, nothing) == 1.0
    one = nothing.copy()
    one[1, 2] = 1
    assert char_f1(one, nothing) == 0.0
    assert frame_acc(one, nothing) == pytest.approx(2 / 3)


def test_unknown_frames_are_left_out_and_no_frames_is_nan():
    truth = np.vstack([TRUE, np.full((1, 3), 255, np.uint8)])  # the last frame's truth is unknown
    pred = np.vstack([PRED, np.ones((1, 3), np.uint8)])
    assert frame_acc(pred, truth) == frame_acc(PRED, TRUE)
    assert char_f1(pred, truth) == char_f1(PRED, TRUE)
    assert math.isnan(frame_acc(np.zeros((0, 3)), np.zeros((0, 3))))


def test_label_acc_ignores_unknown():
    assert setting_acc(np.array([0, 2, 1, 1]), np.array([0, 1, 1, -1])) == pytest.approx(2 / 3)
    assert math.isnan(label_acc(np.array([1]), np.array([-1])))
    with pytest.raises(ValueError, match="same shape"):
        label_acc(np.array([1, 2]), np.array([1]))


def slots(*frames):
    """frames: per frame, (body, colour, accessory) for left, centre, right -> the per-slot label arrays."""
    out = {}
    for s, slot in enumerate(("left", "centre", "right")):
        for a, name in enumerate(("body", "colour", "accessory")):
            out[f"{slot}.{name}"] = np.array([frame[s][a] for frame in frames])
    return out


EMPTY = (0, 0, 0)


def test_appearance_consistency_by_hand():
    truth = slots(
        [(1, 2, 3), EMPTY, (2, 1, 1)],  # two characters
        [EMPTY, (1, 1, 1), EMPTY],  # one
        [EMPTY, EMPTY, EMPTY],  # none
        [(1, 2, 3), (1, 2, 3), EMPTY],  # the same look twice
    )
    pred = slots(
        [(2, 1, 1), (1, 2, 3), EMPTY],  # both right, other slots: 2/2 = 1
        [EMPTY, (1, 2, 1), (3, 3, 3)],  # one wrong colour, one extra: 0 / max(2, 1) = 0
        [EMPTY, EMPTY, EMPTY],  # both empty: 1
        [(1, 2, 3), EMPTY, EMPTY],  # one of two: 1 / 2
    )
    assert appearance_consistency(pred, truth) == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    np.testing.assert_allclose(appearance_by_frame(pred, truth), [1, 0, 1, 0.5])
    # empty predictions score 0 on frames with characters, 1 on frames without
    nothing = slots(*[[EMPTY, EMPTY, EMPTY]] * 4)
    assert appearance_consistency(nothing, truth) == pytest.approx(1 / 4)
    assert appearance_consistency(truth, truth) == 1.0


def test_judge_metrics_picks_what_applies():
    stories = {"characters": TRUE, "setting": np.array([0, 1, 2, 1])}
    metrics = judge_metrics({"characters": PRED, "setting": np.array([0, 1, 0, 1])}, stories)
    assert set(metrics) == {"char_f1", "frame_acc", "setting_acc"}
    assert metrics["setting_acc"] == pytest.approx(3 / 4)
    digits = {"digit": np.array([3, 4]), "colour": np.array([0, 1]), "background": np.array([2, 2])}
    metrics = judge_metrics(
        {"digit": np.array([3, 5]), "colour": np.array([0, 1]), "background": np.array([1, 1])}, digits
    )
    assert metrics == {"digit_acc": 0.5, "color_acc": 1.0, "background_acc": 0.0}
    with pytest.raises(ValueError, match="setting"):
        judge_metrics({"characters": PRED}, stories)


def test_judge_agreement_needs_every_identity_head_to_match():
    # characters match on frames 2 and 3 only; the setting differs on frame 2: one frame of 4 agrees
    reference = {"characters": TRUE, "setting": np.array([0, 1, 2, 1]), "left.body": np.array([1, 1, 1, 1])}
    read = {"characters": PRED, "setting": np.array([0, 1, 0, 1]), "left.body": np.array([0, 0, 0, 0])}
    assert judge_agreement(read, reference) == pytest.approx(1 / 4)  # slot heads are not identity heads
    assert judge_agreement(reference, reference) == 1.0
    digits = {"digit": np.array([3, 4]), "colour": np.array([0, 1]), "background": np.array([2, 2])}
    assert judge_agreement({**digits, "background": np.array([2, 0])}, digits) == 0.5
    with pytest.raises(ValueError, match="no identity head"):
        judge_agreement({"left.body": np.array([1])}, {"left.body": np.array([1])})


def test_by_position_and_heldout_accuracy():
    positions = np.array([1, 2, 1, 2])
    table = by_position({"characters": PRED}, {"characters": TRUE}, positions)
    assert list(table) == [2, 3]  # 1-based frame numbers
    assert table[2]["frame_acc"] == pytest.approx(1 / 2)  # frames 0 (wrong) and 2 (right)
    assert table[3]["frame_acc"] == pytest.approx(1 / 2)  # frames 1 (wrong) and 3 (right)
    accuracy = heldout_accuracy(
        {"characters": PRED, "setting": np.array([1, 1, 0, 0])}, {"characters": TRUE, "setting": np.array([1, 1, 1, 0])}
    )
    assert accuracy == {"characters": 0.5, "setting": 0.75}
