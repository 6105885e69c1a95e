"""PororoSV in its published layout (the StoryGAN / StoryDALL-E data folder).

Files read from the folder:
    img_cache4.npy             (N,) source-frame paths as byte strings, e.g. b'Pororo_ENGLISH1_1/..._ep12/26.png'
    following_cache4.npy       (N, 4) the next four frame paths, same byte-string form
    train_seen_unseen_ids.npy  pickled object array of 3 index arrays (train, val, test) into the caches
    descriptions.npy           pickled dict: frame id -> list of captions (the first is used)
    labels.npy                 pickled dict: frame id -> 9-dim multi-hot character labels
    <frame path>               PNGs, each a vertical strip of square sub-frames (one is taken)
A frame id is its path without ".png"; ids written without the season folder are found too.
The .npy files are pickled, so they are loaded with allow_pickle=True: only convert data you trust.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storyviz.data.formats.common import Source, as_text, load_pickled_npy, one_frame, read_image, require
from storyviz.data.store import DataError

CHARACTERS = ("pororo", "loopy", "eddy", "harry", "poby", "tongtong", "crong", "rody", "petty")


def _lookup(table: dict, frame_id: str, what: str, path: Path):
    for key in (frame_id, "/".join(frame_id.split("/")[-2:]), frame_id.split("/")[-1]):
        if key in table:
            return table[key]
    raise DataError(f"{path}: no {what} for frame {frame_id!r}")


def open_source(src: str | Path) -> Source:
    src = Path(src)
    require(src, "the PororoSV data folder")
    images = load_pickled_npy(src / "img_cache4.npy", "an array of source-frame paths")
    followings = load_pickled_npy(src / "following_cache4.npy", "an (N, 4) array of following frame paths")
    ids = load_pickled_npy(src / "train_seen_unseen_ids.npy", "3 arrays of story indices (train, val, test)")
    descriptions_path, labels_path = src / "descriptions.npy", src / "labels.npy"
    descriptions = load_pickled_npy(descriptions_path, "a pickled dict frame id -> captions", item=True)
    labels = load_pickled_npy(labels_path, "a pickled dict frame id -> 9 character labels", item=True)
    if followings.ndim != 2 or followings.shape[1] != 4 or len(followings) != len(images):
        raise DataError(
            f"{src / 'following_cache4.npy'}: shape {followings.shape}; expected ({len(images)}, 4) like img_cache4.npy"
        )
    if len(ids) != 3:
        raise DataError(f"{src / 'train_seen_unseen_ids.npy'}: {len(ids)} arrays; expected 3 (train, val, test)")
    if not isinstance(descriptions, dict) or not isinstance(labels, dict):
        raise DataError(f"{descriptions_path} / {labels_path}: expected pickled dicts keyed by frame id")
    splits = {}
    for name, indices in zip(("train", "val", "test"), ids):
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        bad = [i for i in indices if not 0 <= i < len(images)]
        if bad:
            raise DataError(f"{src / 'train_seen_unseen_ids.npy'}: {name} index {bad[0]} outside 0..{len(images) - 1}")
        splits[name] = indices

    def record(split: str, index: int, choose) -> dict:
        paths = [as_text(images[index])] + [as_text(path) for path in followings[index]]
        frames, captions, characters = [], [], []
        for path in paths:
            frame_id = path[:-4] if path.endswith(".png") else path
            strip = read_image(src / path, "a PororoSV frame PNG (a vertical strip of square sub-frames)")
            frames.append(one_frame(strip, choose))
            texts = _lookup(descriptions, frame_id, "description", descriptions_path)
            captions.append(str(texts[0] if isinstance(texts, list | tuple | np.ndarray) else texts).strip())
            vector = np.asarray(_lookup(labels, frame_id, "labels", labels_path)).reshape(-1)
            if vector.shape != (len(CHARACTERS),):
                raise DataError(f"{labels_path}: labels of {frame_id!r} have shape {vector.shape}; expected (9,)")
            characters.append((vector > 0.5).astype(np.uint8))
        return {
            "frames": frames,
            "captions": captions,
            "labels": {"characters": np.stack(characters)},
            "annotation": [
                {"path": path, "characters": [c for c, on in zip(CHARACTERS, v) if on]}
                for path, v in zip(paths, characters)
            ],  # fmt: skip
            "story_id": paths[0][:-4] if paths[0].endswith(".png") else paths[0],
        }

    return Source(
        name="pororo",
        frames_per_story=5,
        heads={"characters": {"type": "multi", "classes": list(CHARACTERS)}},
        splits=splits,
        record=record,
        meta={"characters": list(CHARACTERS), "settings": []},
    )
