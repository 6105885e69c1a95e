"""The on-disk format: round trip, lazy per-process opening, atomic writes, clear errors."""

import json
import pickle

import numpy as np
import pytest
import torch

from storyviz.data import DataError, open_dataset, write_meta, write_split

HEADS = {
    "characters": {"type": "multi", "classes": ["a", "b", "c"]},
    "setting": {"type": "single", "classes": ["x", "y"]},
}


def make_records(count, length=2, size=8, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        yield {
            "frames": rng.integers(0, 256, size=(length, size, size, 3), dtype=np.uint8),
            "captions": [f"story {i} frame {j} é" for j in range(length)],
            "captions_pronoun": [f"it {i} {j}" for j in range(length)],
            "labels": {
                "characters": rng.integers(0, 2, size=(length, 3)).astype(np.uint8),
                "setting": rng.integers(0, 2, size=length),
            },
            "annotation": [{"frame": j, "story": i} for j in range(length)],
            "story_id": f"s{i}",
        }


def write_set(folder, count=70, pronouns=True):
    counts = {"train": write_split(folder / "train.h5", make_records(count), 2, 8, HEADS, pronouns=pronouns)}
    write_meta(
        folder,
        {"name": "t", "kind": "stories", "frames_per_story": 2, "image_size": 8, "splits": counts, "labels": HEADS},
    )
    return folder


def test_round_trip_and_frames_view(tmp_path):
    write_set(tmp_path, count=70)  # more than one write block
    data = open_dataset(tmp_path)
    assert data.meta["format_version"] == 1
    stories = data.split("train")
    expected = list(make_records(70))
    assert len(stories) == 70
    for index in (0, 63, 64, 69):
        got, want = stories[index], expected[index]
        np.testing.assert_array_equal(got["frames"], want["frames"])
        assert got["captions"] == want["captions"]
        assert got["captions_pronoun"] == want["captions_pronoun"]
        np.testing.assert_array_equal(got["labels"]["characters"], want["labels"]["characters"])
        np.testing.assert_array_equal(got["labels"]["setting"], want["labels"]["setting"])
        assert got["annotation"] == want["annotation"]
        assert got["story_id"] == want["story_id"]
    frames = stories.frames()
    assert len(frames) == 140
    item = frames[2 * 5 + 1]
    assert (item["story_index"], item["frame_index"]) == (5, 1)
    np.testing.assert_array_equal(item["image"], expected[5]["frames"][1])
    assert item["caption"] == expected[5]["captions"][1]
    assert item["labels"]["setting"] == expected[5]["labels"]["setting"][1]
    with pytest.raises(IndexError):
        stories[70]


def test_missing_labels_are_unknown_and_no_pronouns(tmp_path):
    records = [{"frames": np.zeros((2, 8, 8, 3), np.uint8), "captions": ["a", "b"]}]
    write_split(tmp_path / "train.h5", records, 2, 8, HEADS)
    write_meta(tmp_path, {"name": "t", "kind": "stories", "frames_per_story": 2, "image_size": 8,
                          "splits": {"train": 1}, "labels": HEADS})  # fmt: skip
    story = open_dataset(tmp_path).split("train")[0]
    assert story["captions_pronoun"] is None
    assert (story["labels"]["setting"] == -1).all()


def test_split_pickles_without_open_handle_and_works_in_workers(tmp_path):
    write_set(tmp_path, count=6)
    stories = open_dataset(tmp_path).split("train")
    _ = stories[0]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(stories))
    assert clone._handle is None
    np.testing.assert_array_equal(clone[3]["frames"], stories[3]["frames"])
    loader = torch.utils.data.DataLoader(
        stories.frames(), batch_size=4, num_workers=2, collate_fn=lambda items: [i["image"] for i in items]
    )
    images = [image for batch in loader for image in batch]
    assert len(images) == 12
    np.testing.assert_array_equal(images[7], stories[3]["frames"][1])


def test_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield from make_records(3)
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError):
        write_split(tmp_path / "train.h5", broken(), 2, 8, HEADS)
    assert list(tmp_path.iterdir()) == []
    bad = {"frames": np.zeros((2, 9, 8, 3), np.uint8), "captions": ["a", "b"]}
    with pytest.raises(DataError, match="expected uint8"):
        write_split(tmp_path / "train.h5", [bad], 2, 8, HEADS)
    assert list(tmp_path.iterdir()) == []


def test_open_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="meta.json"):
        open_dataset(tmp_path)
    write_set(tmp_path, count=2)
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DataError, match="format_version 99"):
        open_dataset(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="no split 'val'"):
        open_dataset(tmp_path).split("val")
