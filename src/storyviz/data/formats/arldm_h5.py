"""The ARLDM HDF5 layout: reader and writer.

One HDF5 file with a group per split (train, val, test); in each group:
    image0 .. image4   vlen uint8 (N,), each an encoded PNG of one story frame (PororoSV / FlintstonesSV
                       frames are vertical strips of square sub-frames, of which one is taken)
    text               vlen str (N,), the story's captions joined by "|" (VIST files have "sis" and "dii"
                       instead; "sis" is read then)
The original ARLDM scripts encode RGB arrays with OpenCV, so their PNGs hold B, G, R: read such files with
`swap_rb=True` (`--swap-rb`). The writer writes correct RGB PNGs unless asked for the same swap.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from storyviz.data.formats.common import Source, decode_png, encode_png, one_frame, require
from storyviz.data.store import DataError, open_dataset
from storyviz.files import atomic_path

LENGTH = 5
SPLITS = ("train", "val", "test")


def _find_file(src: Path) -> Path:
    if src.is_dir():
        files = sorted(src.glob("*.h5")) + sorted(src.glob("*.hdf5"))
        if len(files) != 1:
            raise DataError(f"{src}: expected exactly one ARLDM .h5 file in the folder, found {len(files)}")
        return files[0]
    return require(src, "an ARLDM HDF5 file")


def open_source(src: str | Path, swap_rb: bool = False) -> Source:
    path = _find_file(Path(src))
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: not a readable HDF5 file ({error})") from None
    with handle:
        splits = {}
        for name in SPLITS:
            if name not in handle:
                continue
            group = handle[name]
            missing = [f"image{i}" for i in range(LENGTH) if f"image{i}" not in group]
            text_key = "text" if "text" in group else "sis" if "sis" in group else None
            if missing or text_key is None:
                raise DataError(f"{path}: group {name!r} lacks {missing or ['text']}; expected image0..image4 and text")
            splits[name] = list(range(len(group[text_key])))
        if not splits:
            raise DataError(f"{path}: no group train, val or test; expected the ARLDM layout")

    def record(split: str, index: int, choose) -> dict:
        with h5py.File(path, "r") as handle:
            group = handle[split]
            text_key = "text" if "text" in group else "sis"
            raw = group[text_key][index]
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            captions = text.split("|")
            if len(captions) != LENGTH:
                raise DataError(f"{path}: {split}/{text_key}[{index}] has {len(captions)} captions; expected {LENGTH}")
            frames = []
            for i in range(LENGTH):
                image = decode_png(group[f"image{i}"][index], f"{path}: {split}/image{i}[{index}]")
                image = one_frame(image, choose)
                frames.append(image[..., ::-1].copy() if swap_rb else image)
        return {
            "frames": frames,
            "captions": [caption.strip() for caption in captions],
            "labels": {},
            "annotation": [{"index": index, "frame": i} for i in range(LENGTH)],
            "story_id": f"{split}-{index}",
        }

    return Source(name="arldm-h5", frames_per_story=LENGTH, heads={}, splits=splits, record=record,
                  meta={"characters": [], "settings": [], "swap_rb": swap_rb})  # fmt: skip


def write_arldm_h5(data_path: str | Path, out: str | Path, swap_rb: bool = False, pronouns: bool = False) -> Path:
    """Writes a storyviz data set (5-frame stories) in the ARLDM HDF5 layout, atomically.

    Splits train/val/test are written (others, such as test_unseen, are not part of the layout).
    `swap_rb=True` reproduces the original scripts' B, G, R PNGs; `pronouns=True` writes the pronoun captions.
    """
    data = open_dataset(data_path)
    if int(data.meta["frames_per_story"]) != LENGTH:
        raise DataError(f"{data_path}: {data.meta['frames_per_story']} frames per story; the ARLDM layout needs 5")
    out = Path(out)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as handle:
        for name in SPLITS:
            if name not in data.splits:
                continue
            stories = data.split(name)
            group = handle.create_group(name)
            images = [
                group.create_dataset(f"image{i}", (len(stories),), dtype=h5py.vlen_dtype(np.uint8))
                for i in range(LENGTH)
            ]
            text = group.create_dataset("text", (len(stories),), dtype=h5py.string_dtype(encoding="utf-8"))
            for index in range(len(stories)):
                story = stories[index]
                captions = story["captions_pronoun"] if pronouns and story["captions_pronoun"] else story["captions"]
                if any("|" in caption for caption in captions):
                    raise DataError(f"{data_path}: story {story['story_id']} has a caption with '|'")
                for i, frame in enumerate(story["frames"]):
                    images[i][index] = encode_png(frame[..., ::-1] if swap_rb else frame)
                text[index] = "|".join(captions)
    return out
