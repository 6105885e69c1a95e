"""The generators shipped inside the package: they load, repeat themselves under a seed, and the judges read their
frames as their captions ask (a smoke test of the real artifacts; the measured quality is in benchmarks/RESULTS.md)."""

import numpy as np

from storyviz.data.digits import digit_record
from storyviz.evaluation.judges import judge_frames, load_judge
from storyviz.pipelines.base import SamplingOptions, StoryRequest, load_pipeline

HEADS = ("digit", "colour", "background")


def test_digits_model_draws_what_its_captions_ask():
    pipeline = load_pipeline("digits")
    records = [digit_record(0, "test", index) for index in range(12)]
    request = StoryRequest([record["captions"][0] for record in records])
    options = SamplingOptions(seed=3, top_k=32)
    frames = np.stack(pipeline.generate([request], options)[0].frames)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, np.stack(pipeline.generate([request], options)[0].frames))
    readings, _ = judge_frames(load_judge("judge-digits"), frames)
    right = np.ones(len(records), dtype=bool)
    for head in HEADS:
        truth = np.array([record["labels"][head][0] for record in records])
        right &= readings[head] == truth
    assert right.sum() >= 9, f"the judge read only {right.sum()} of 12 generated digits as their captions ask"
