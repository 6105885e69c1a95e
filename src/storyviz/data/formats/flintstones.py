"""FlintstonesSV in its published layout (the StoryDALL-E / ARLDM data folder).

Files read from the folder:
    train-val-test_split.json          {"train": [globalID, ...], "val": [...], "test": [...]}
    flintstones_annotations_v1-0.json  list of records with "globalID", "description", "characters"
                                       (list of {"entityLabel": name, ...} or names) and "setting"
    following_cache4.pkl               pickled dict: globalID -> the next 4 globalIDs
    labels.pkl                         pickled dict: globalID -> 7-dim character labels (optional; the
                                       annotations' characters are used when it is absent)
    video_frames_sampled/<globalID>.npy  uint8 (n_frames, 128, 128, 3); one frame is taken
A story is a clip and its 4 followers; clips with fewer than 4 followers are skipped (in every split).
The .pkl files are pickled, so they are loaded with pickle: only convert data you trust.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storyviz.data.formats.common import Source, load_json, load_pickle, one_frame, read_image, require
from storyviz.data.store import DataError

CHARACTERS = ("wilma", "fred", "betty", "barney", "dino", "pebbles", "mr slate")


def _names(entry) -> list[str]:
    names = []
    for character in entry or []:
        name = character.get("entityLabel", "") if isinstance(character, dict) else str(character)
        name = name.strip().lower()
        names.append("mr slate" if "slate" in name else name)
    return names


def open_source(src: str | Path) -> Source:
    src = Path(src)
    require(src, "the FlintstonesSV data folder")
    split_path = src / "train-val-test_split.json"
    ids = load_json(split_path, 'a JSON object {"train": [...], "val": [...], "test": [...]} of globalIDs')
    if not isinstance(ids, dict) or not all(isinstance(ids.get(name), list) for name in ("train", "val", "test")):
        raise DataError(f"{split_path}: expected keys train, val, test with lists of globalIDs")
    annotations_path = src / "flintstones_annotations_v1-0.json"
    annotations = load_json(annotations_path, "a JSON list of records with globalID and description")
    if not isinstance(annotations, list):
        raise DataError(f"{annotations_path}: expected a JSON list of records")
    by_id = {}
    for i, item in enumerate(annotations):
        if not isinstance(item, dict) or "globalID" not in item or "description" not in item:
            raise DataError(f"{annotations_path}: record {i} lacks 'globalID' or 'description'")
        by_id[item["globalID"]] = item
    followings = load_pickle(src / "following_cache4.pkl", "a pickled dict globalID -> next 4 globalIDs")
    labels_path = src / "labels.pkl"
    labels = load_pickle(labels_path, "a pickled dict globalID -> 7 character labels") if labels_path.exists() else {}
    settings = sorted({str(item.get("setting", "")).strip().lower() for item in annotations} - {""})

    splits = {}
    for name in ("train", "val", "test"):
        splits[name] = [gid for gid in ids[name] if len(followings.get(gid, ())) == 4]

    def record(split: str, gid: str, choose) -> dict:
        gids = [gid, *followings[gid]]
        frames, captions, characters, setting, notes = [], [], [], [], []
        for clip in gids:
            if clip not in by_id:
                raise DataError(f"{annotations_path}: no record for globalID {clip!r}")
            item = by_id[clip]
            video = read_image(src / "video_frames_sampled" / f"{clip}.npy", "uint8 (n_frames, H, W, 3) video frames")
            frames.append(one_frame(video, choose))
            captions.append(str(item["description"]).strip())
            if clip in labels:
                vector = (np.asarray(labels[clip]).reshape(-1) > 0.5).astype(np.uint8)
                if vector.shape != (len(CHARACTERS),):
                    raise DataError(f"{labels_path}: labels of {clip!r} have shape {vector.shape}; expected (7,)")
            else:
                present = _names(item.get("characters"))
                vector = np.array([name in present for name in CHARACTERS], np.uint8)
            characters.append(vector)
            place = str(item.get("setting", "")).strip().lower()
            setting.append(settings.index(place) if place in settings else -1)
            notes.append({"globalID": clip, "setting": place, "characters": _names(item.get("characters"))})
        return {
            "frames": frames,
            "captions": captions,
            "labels": {"characters": np.stack(characters), "setting": np.array(setting, np.int64)},
            "annotation": notes,
            "story_id": gid,
        }

    return Source(
        name="flintstones",
        frames_per_story=5,
        heads={
            "characters": {"type": "multi", "classes": list(CHARACTERS)},
            "setting": {"type": "single", "classes": settings},
        },
        splits=splits,
        record=record,
        meta={"characters": list(CHARACTERS), "settings": settings},
    )
