"""The demo's request handling without a browser: the character gallery, request building and validation, the
sampling controls, writing a story with a tiny real StoryDALL-E bundle, and `storyviz demo` refusing bad options."""

import json

import numpy as np
import pytest
from PIL import Image

from storyviz.cli.main import main
from storyviz.data.sprites.world import COLOURS, NAMED
from storyviz.demo import DemoInputError, build_request, character_gallery, run_story, sampling_from_form
from storyviz.pipelines import SamplingOptions, load_pipeline


def test_the_gallery_shows_every_named_character_in_its_colour():
    gallery = character_gallery(32)
    assert [item.name for item in gallery] == [character.name for character in NAMED]
    for item, character in zip(gallery, NAMED):
        assert item.frame.shape == (32, 32, 3) and item.frame.dtype == np.uint8
        assert item.caption.startswith(f"{item.name} is standing ")
        centre = item.frame[8:30, 11:21].reshape(-1, 3).astype(int)  # the centre slot, where the character stands
        distance = np.abs(centre - np.array(COLOURS[character.colour])).sum(axis=1)
        assert distance.min() < 60, f"{item.name}: no {character.colour} pixel in the centre slot"
    assert len({item.frame.tobytes() for item in gallery}) == len(gallery)
    assert character_gallery(16)[0].frame.shape == (16, 16, 3)  # below the drawing range: drawn, then resized


def test_blank_caption_boxes_are_skipped_and_no_captions_is_refused():
    request = build_request(["  Pip waves. ", "", None, "Pip jumps."], None, "ignored without a source", 4, 32)
    assert request.captions == ["Pip waves.", "Pip jumps."]
    assert request.source_frame is None and request.source_caption is None
    with pytest.raises(DemoInputError, match="No captions"):
        build_request(["", "   ", None], None, None, 4, 32)


def test_the_source_frame_is_read_fitted_and_counted(tmp_path):
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, 20:60] = 200  # the centre square
    Image.fromarray(wide).save(tmp_path / "wide.jpg")
    request = build_request(["Bo jumps."], tmp_path / "wide.jpg", " Bo stands. ", 2, 16)
    assert request.source_frame.shape == (16, 16, 3) and request.source_frame.min() > 150
    assert request.source_caption == "Bo stands."
    with pytest.raises(DemoInputError, match="2 frames asked.*source frame counts.*at most 1"):
        build_request(["Bo jumps."], tmp_path / "wide.jpg", None, 1, 16)
    with pytest.raises(DemoInputError, match="3 frames asked, but this model generates at most 2"):
        build_request(["a", "b", "c"], None, None, 2, 16)
    with pytest.raises(DemoInputError, match="takes no source frame"):
        build_request(["a"], tmp_path / "wide.jpg", None, 4, 16, supports_continuation=False)


def test_an_unreadable_upload_is_answered_with_a_message(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DemoInputError, match="notes.png is not an image"):
        build_request(["Pip waves."], tmp_path / "notes.png", None, 4, 32)


def test_sampling_controls_are_checked():
    options = sampling_from_form(3, 8.0, 0.9, 0.7, 2.0, 2)
    assert options == SamplingOptions(seed=3, top_k=8, top_p=0.9, temperature=0.7, guidance=2.0, candidates=2)
    assert isinstance(options.top_k, int) and isinstance(options.seed, int)
    bad = [
        ((None, 0, 1.0, 1.0, 1.0, 1), "seed"),
        ((1.5, 0, 1.0, 1.0, 1.0, 1), "seed must be a whole number"),
        ((0, -1, 1.0, 1.0, 1.0, 1), "top-k"),
        ((0, 0, 0.0, 1.0, 1.0, 1), "top-p"),
        ((0, 0, 1.0, 0.0, 1.0, 1), "temperature"),
        ((0, 0, 1.0, 1.0, -1.0, 1), "guidance"),
        ((0, 0, 1.0, 1.0, 1.0, 0), "candidates"),
    ]
    for values, message in bad:
        with pytest.raises(DemoInputError, match=message):
            sampling_from_form(*values)


def test_run_story_writes_the_story_and_repeats_with_the_seed(tmp_path):
    from tiny_models import tiny_storydalle

    pipeline = load_pipeline(tiny_storydalle(tmp_path / "model"))
    source = character_gallery(pipeline.image_size)[2]
    request = build_request(["Bo jumps.", "Bo sits down."], None, None, pipeline.max_frames, pipeline.image_size)
    request.source_frame, request.source_caption = source.frame, source.caption
    options = SamplingOptions(seed=5, top_k=4)
    items, strip, seconds = run_story(pipeline, request, options, tmp_path / "one", model="tiny")
    assert [caption for _, caption in items] == ["Bo jumps.", "Bo sits down."]
    assert Image.open(items[0][0]).size == (pipeline.image_size, pipeline.image_size)
    assert strip.name == "story.png" and Image.open(strip).width == 3 * 256 + 4 * 8
    record = json.loads((tmp_path / "one" / "story.json").read_text())
    assert record["seed"] == 5 and record["source_caption"] == source.caption and seconds > 0
    again, _, _ = run_story(pipeline, request, options, tmp_path / "two")
    assert [np.asarray(Image.open(a)).tolist() for a, _ in items] == [
        np.asarray(Image.open(b)).tolist() for b, _ in again
    ]


def test_the_demo_command_refuses_a_missing_model_and_bad_concurrency(tmp_path, capsys):
    assert main(["demo", "--model", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["demo", "--concurrency", "0"]) == 2
    assert "--concurrency must be 1 or more" in capsys.readouterr().err
