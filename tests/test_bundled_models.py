"""The generators shipped inside the package: they load, repeat themselves under a seed, and the judges read their
frames as their captions (and, for stories, the source frame) ask. A smoke test of the real artifacts; their
measured quality is in benchmarks/RESULTS.md."""

import numpy as np
import pytest
import torch

from storyviz.data.digits import digit_record
from storyviz.data.sprites.stories import story_record
from storyviz.evaluation.judges import judge_frames, load_judge
from storyviz.evaluation.metrics import char_f1
from storyviz.pipelines.base import SamplingOptions, StoryRequest, load_pipeline
from storyviz.pipelines.dalle import bundled_scorer
from storyviz.registry import ASSETS
from storyviz.training.tasks.scorer import images_of

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


@pytest.mark.parametrize("name", [None, "sprites-arldm"])  # None: the default, the `sprites` StoryDALL-E
def test_sprites_models_continue_stories_with_their_characters(name):
    pipeline = load_pipeline(name)
    records = [story_record(0, "test", index) for index in range(4)]
    requests = [
        StoryRequest(record["captions"][1:], source_frame=record["frames"][0], source_caption=record["captions"][0])
        for record in records
    ]
    options = pipeline.sampling  # the settings it ships with (seed 0)
    frames = np.concatenate([story.frames for story in pipeline.generate(requests, options)])
    assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8
    again = np.concatenate([story.frames for story in pipeline.generate(requests, options)])
    assert np.array_equal(frames, again), "the same seed gave other stories"
    readings, _ = judge_frames(load_judge("judge-sprites"), frames)
    truth = np.concatenate([record["labels"]["characters"][1:] for record in records])
    assert char_f1(readings["characters"], truth) >= 0.6


@pytest.mark.parametrize("name", ["digits", "sprites"])
def test_shipped_scorers_pick_the_real_frame_of_a_caption(name):
    # each caption against the real frames of 4 test items (a story's frames for sprites): its own frame should win
    reranker = bundled_scorer(ASSETS / "models" / name)
    if name == "digits":
        records = [digit_record(0, "test", index) for index in range(32)]
        groups = [records[start : start + 4] for start in range(0, 32, 4)]
        captions = [[record["captions"][0] for record in group] for group in groups]
        frames = [np.stack([record["frames"][0] for record in group]) for group in groups]
    else:
        records = [story_record(0, "test", index) for index in range(8)]
        captions = [record["captions"][:4] for record in records]
        frames = [record["frames"][:4] for record in records]
    right = total = 0
    for texts, pictures in zip(captions, frames):
        images = images_of(torch.from_numpy(pictures), reranker.scorer.config.image_size)
        scores = reranker(texts, images[None].expand(len(texts), -1, -1, -1, -1))
        right += int((scores.argmax(dim=1) == torch.arange(len(texts))).sum())
        total += len(texts)
    assert right >= 0.75 * total, f"{name}'s scorer picked the caption's own frame for {right} of {total} captions"
