"""Published-format readers on tiny fixtures written in the exact published layouts, the ARLDM writer round
trip, and clear errors on broken input (nothing half-written)."""

import json
import pickle

import h5py
import numpy as np
import pytest
from PIL import Image

from storyviz.cli.main import main
from storyviz.data import DataError, open_dataset
from storyviz.data.build import build
from storyviz.data.formats import convert
from storyviz.data.formats.arldm_h5 import write_arldm_h5
from storyviz.data.formats.common import encode_png

RNG = np.random.default_rng(0)


def solid(colour, size=16):
    return np.full((size, size, 3), colour, np.uint8)


def colour_of(index):
    return (10 + 20 * (index % 12), 200 - 15 * (index % 12), (37 * index) % 256)


# ------------------------------------------------------------------------------------------------ fixtures


def write_pororo(root, stories=4, strip=3):
    """img_cache4.npy / following_cache4.npy of byte-string paths, pickled dicts, vertical-strip PNGs."""
    paths, descriptions, labels = [], {}, {}
    for k in range(stories * 5):
        path = f"Pororo_ENGLISH1_1/Pororo_ENGLISH1_1_ep{k // 5}/{k % 5}.png"
        frames = [solid(colour_of(k)) for _ in range(strip)]
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(frames, axis=0)).save(root / path)  # (strip*16, 16, 3)
        paths.append(path.encode())
        descriptions[path[:-4]] = [f"caption {k}", "another caption"]
        labels[path[:-4]] = (np.arange(9) == k % 9).astype(np.float64)
    sources = np.array([paths[5 * s] for s in range(stories)])
    followings = np.array([[paths[5 * s + i] for i in range(1, 5)] for s in range(stories)])
    np.save(root / "img_cache4.npy", sources)
    np.save(root / "following_cache4.npy", followings)
    ids = np.empty(3, dtype=object)
    ids[0], ids[1], ids[2] = np.array([0, 1]), np.array([2]), np.array([3])
    np.save(root / "train_seen_unseen_ids.npy", ids, allow_pickle=True)
    np.save(root / "descriptions.npy", descriptions, allow_pickle=True)
    np.save(root / "labels.npy", labels, allow_pickle=True)


def write_flintstones(root):
    gids = [f"s_{i:02d}_e_0_shot_{i:06d}_{i + 100:06d}" for i in range(9)]
    names = ["fred", "wilma", "barney", "betty", "dino", "pebbles", "mr slate"]
    (root / "video_frames_sampled").mkdir(parents=True)
    annotations = []
    for i, gid in enumerate(gids):
        np.save(root / "video_frames_sampled" / f"{gid}.npy", np.stack([solid(colour_of(i))] * 3))
        annotations.append({"globalID": gid, "description": f"Fred does thing {i}.", "setting": ["room", "yard"][i % 2],
                            "characters": [{"entityLabel": names[i % 7].title(), "labelNPC": "x"}]})  # fmt: skip
    (root / "flintstones_annotations_v1-0.json").write_text(json.dumps(annotations))
    (root / "train-val-test_split.json").write_text(
        json.dumps({"train": gids[:2], "val": [gids[2]], "test": [gids[8]]})
    )
    followings = {gids[0]: gids[1:5], gids[1]: gids[2:6], gids[2]: gids[3:7], gids[8]: gids[5:8]}  # test: 3 only
    with open(root / "following_cache4.pkl", "wb") as handle:
        pickle.dump(followings, handle)
    labels = {gid: (np.array(["wilma", "fred", "betty", "barney", "dino", "pebbles", "mr slate"]) == names[i % 7])
              .astype(np.float32) for i, gid in enumerate(gids)}  # fmt: skip
    with open(root / "labels.pkl", "wb") as handle:
        pickle.dump(labels, handle)
    return gids


def write_didemo(root):
    (root / "frames").mkdir(parents=True)
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        examples = []
        for e in range(count):
            pairs = []
            for f in range(4):
                path = f"frames/{split}_{e}_{f}.png"
                Image.fromarray(np.concatenate([solid(colour_of(f + e))] * 2)).save(root / path)
                pairs.append([f"{split} {e} caption {f}", path])
            examples.append({"desc_to_frame": pairs, "vid": f"v{e}"})
        examples.append({"desc_to_frame": pairs[:2]})  # too short: skipped
        (root / f"{split}.json").write_text(json.dumps(examples))


def write_vist(root):
    (root / "sis").mkdir(parents=True)
    (root / "dii").mkdir()
    for split in ("train", "val", "test"):
        (root / "images" / split).mkdir(parents=True)
        annotations, dii = [], []
        for story in range(2):
            for order in (4, 2, 0, 1, 3):  # shuffled on disk, sorted by worker order when read
                photo = f"{split}{story}{order}"
                Image.fromarray(np.full((12, 20, 3), colour_of(order), np.uint8)).save(
                    root / "images" / split / f"{photo}.jpg", quality=95
                )
                annotations.append([{"story_id": f"{split}-{story}", "photo_flickr_id": photo, "album_id": "a",
                                     "worker_arranged_photo_order": order, "text": f"sentence {order} .",
                                     "original_text": f"Sentence {order}."}])  # fmt: skip
                dii.append([{"photo_flickr_id": photo, "text": f"a photo {order}"}])
        (root / "sis" / f"{split}.story-in-sequence.json").write_text(json.dumps({"annotations": annotations}))
        (root / "dii" / f"{split}.description-in-isolation.json").write_text(json.dumps({"annotations": dii}))


def write_arldm(path, swap=True):
    """As the original scripts: image0..image4 vlen uint8 PNG bytes (BGR when `swap`), text joined by '|'."""
    with h5py.File(path, "w") as handle:
        for split, count in (("train", 3), ("val", 1), ("test", 1)):
            group = handle.create_group(split)
            images = [group.create_dataset(f"image{i}", (count,), dtype=h5py.vlen_dtype(np.uint8)) for i in range(5)]
            text = group.create_dataset("text", (count,), dtype=h5py.string_dtype(encoding="utf-8"))
            for s in range(count):
                for i in range(5):
                    strip = np.concatenate([solid((250, 10 * i, 5 * s))] * 2)  # a 2-frame vertical strip
                    images[i][s] = encode_png(strip[..., ::-1] if swap else strip)
                text[s] = "|".join(f"{split} story {s} caption {i}" for i in range(5))


# --------------------------------------------------------------------------------------------------- tests


def test_pororo(tmp_path):
    write_pororo(tmp_path / "src")
    assert main(["--quiet", "data", "convert", "pororo", "--src", str(tmp_path / "src"), "--out",
                 str(tmp_path / "out"), "--size", "16"]) == 0  # fmt: skip
    data = open_dataset(tmp_path / "out")
    assert data.meta["splits"] == {"train": 2, "val": 1, "test": 1}
    assert data.meta["labels"]["characters"]["classes"][0] == "pororo"
    story = data.split("train")[1]  # source frame 5, followers 6..9
    assert story["captions"] == [f"caption {k}" for k in range(5, 10)]
    for j, k in enumerate(range(5, 10)):
        np.testing.assert_array_equal(story["frames"][j], solid(colour_of(k)))
        assert story["labels"]["characters"][j].tolist() == (np.arange(9) == k % 9).astype(int).tolist()
    assert data.split("test")[0]["story_id"].endswith("_ep3/0")


def test_flintstones_skips_short_stories(tmp_path):
    gids = write_flintstones(tmp_path / "src")
    convert("flintstones", tmp_path / "src", tmp_path / "out", size=8, subframe="first")
    data = open_dataset(tmp_path / "out")
    assert data.meta["splits"] == {"train": 2, "val": 1, "test": 0}
    story = data.split("train")[1]
    assert story["story_id"] == gids[1]
    assert story["captions"][0] == "Fred does thing 1."
    np.testing.assert_array_equal(story["frames"][2], solid(colour_of(3), 8))
    characters = data.meta["labels"]["characters"]["classes"]
    assert characters[np.flatnonzero(story["labels"]["characters"][0])[0]] == "wilma"
    assert data.meta["labels"]["setting"]["classes"] == ["room", "yard"]
    assert story["labels"]["setting"].tolist() == [1, 0, 1, 0, 1]


def test_didemo(tmp_path):
    write_didemo(tmp_path / "src")
    convert("didemo", tmp_path / "src", tmp_path / "out", size=16)
    data = open_dataset(tmp_path / "out")
    assert data.meta["frames_per_story"] == 3 and data.meta["splits"] == {"train": 2, "val": 1, "test": 1}
    story = data.split("train")[1]
    assert story["captions"] == ["train 1 caption 0", "train 1 caption 1", "train 1 caption 2"]
    np.testing.assert_array_equal(story["frames"][1], solid(colour_of(2)))


def test_vist(tmp_path):
    write_vist(tmp_path / "src")
    convert("vist", tmp_path / "src", tmp_path / "out", size=8)
    data = open_dataset(tmp_path / "out")
    assert data.meta["splits"] == {"train": 2, "val": 2, "test": 2}
    story = data.split("val")[1]
    assert story["story_id"] == "val-1"
    assert story["captions"] == [f"sentence {order} ." for order in range(5)]
    assert story["annotation"][3] == {"photo_flickr_id": "val13", "dii": "a photo 3"}
    assert np.abs(story["frames"][4].astype(int) - np.array(colour_of(4))).max() <= 6  # JPEG


def test_arldm_reader_with_and_without_the_rb_swap(tmp_path):
    write_arldm(tmp_path / "pororo.h5", swap=True)
    convert("arldm-h5", tmp_path / "pororo.h5", tmp_path / "fixed", size=16, swap_rb=True)
    convert("arldm-h5", tmp_path, tmp_path / "raw", size=16)  # a folder with one .h5 file works too
    fixed, raw = open_dataset(tmp_path / "fixed").split("train")[2], open_dataset(tmp_path / "raw").split("train")[2]
    assert fixed["captions"] == [f"train story 2 caption {i}" for i in range(5)]
    np.testing.assert_array_equal(fixed["frames"][3], solid((250, 30, 10)))
    np.testing.assert_array_equal(raw["frames"][3], solid((10, 30, 250)))


def test_arldm_writer_round_trip(tmp_path):
    build("sprites", tmp_path / "sprites", 20, size=32, seed=1)
    for swap in (False, True):
        write_arldm_h5(tmp_path / "sprites", tmp_path / f"arldm{swap}.h5", swap_rb=swap)
        with h5py.File(tmp_path / f"arldm{swap}.h5") as handle:
            assert set(handle) == {"train", "val", "test"}
            assert handle["train"]["image0"].dtype == h5py.vlen_dtype(np.uint8)
        convert("arldm-h5", tmp_path / f"arldm{swap}.h5", tmp_path / f"back{swap}", size=32, swap_rb=swap)
        original, back = open_dataset(tmp_path / "sprites").split("val"), open_dataset(tmp_path / f"back{swap}")
        for index in (0, 19):
            np.testing.assert_array_equal(back.split("val")[index]["frames"], original[index]["frames"])
            assert back.split("val")[index]["captions"] == original[index]["captions"]


def test_broken_inputs_name_the_file_and_write_nothing(tmp_path, capsys):
    src = tmp_path / "pororo"
    write_pororo(src)
    (src / "labels.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match=r"labels\.npy.*could not be read"):
        convert("pororo", src, tmp_path / "out")
    (src / "img_cache4.npy").unlink()
    assert main(["data", "convert", "pororo", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "img_cache4.npy: missing" in capsys.readouterr().err

    flint = tmp_path / "flint"
    write_flintstones(flint)
    (flint / "train-val-test_split.json").write_text("{broken")
    with pytest.raises(DataError, match=r"train-val-test_split\.json: not valid JSON"):
        convert("flintstones", flint, tmp_path / "out")

    didemo = tmp_path / "didemo"
    write_didemo(didemo)
    (didemo / "frames" / "val_0_1.png").unlink()  # a frame missing half-way through the conversion
    with pytest.raises(DataError, match=r"val_0_1\.png: missing"):
        convert("didemo", didemo, tmp_path / "out", size=16)

    (tmp_path / "bad.h5").write_bytes(b"\x89HDF nope")
    with pytest.raises(DataError, match=r"bad\.h5: not a readable HDF5 file"):
        convert("arldm-h5", tmp_path / "bad.h5", tmp_path / "out")
    with h5py.File(tmp_path / "wrong.h5", "w") as handle:
        handle.create_group("train").create_dataset("text", data=np.array([b"a|b|c|d|e"]))
    with pytest.raises(DataError, match=r"lacks \['image0'"):
        convert("arldm-h5", tmp_path / "wrong.h5", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
