"""storyviz's one on-disk format for story data, its writer and its lazy reader.

A data set is a folder::

    meta.json      {"format_version": 1, "name", "kind": "stories" | "images", "frames_per_story" (L),
                    "image_size" (H = W), "splits": {split: number of stories},
                    "labels": {head: {"type": "multi" | "single", "classes": [...]}}, ... plus whatever the
                    source adds (the sprites world description, generator seed and version, ...)}
    train.h5       one HDF5 file per split (also val.h5, test.h5, and test_unseen.h5 for sprites)

Each split file holds N stories of L frames:

    frames            uint8 (N, L, H, W, 3), one story per chunk, gzip level 4 (measured on 64 px sprites:
                      12 KB per story and 0.25 ms per frame to write, against lzf's 41 KB and 0.26 ms;
                      lzf's output is also not byte-reproducible, gzip's is)
    captions          vlen utf-8 strings (N, L)
    captions_pronoun  vlen utf-8 strings (N, L), only when the source has a pronoun version
    labels/<head>     uint8 (N, L, C) multi-hot for "multi" heads, int64 (N, L) class index for "single"
                      heads; unknown labels are -1 (single) or 255 (multi)
    annotations       vlen utf-8 JSON (N,): the full ground truth of the story, a list of L per-frame dicts
    story_ids         vlen utf-8 strings (N,)

Writing goes to a temporary file beside the target and is renamed over it only when the split is
complete, so nothing half-written is ever left. Reading is lazy: the HDF5 file is opened on first access in
each process (never pickled), so DataLoader workers and distributed training each get their own handle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from torch.utils.data import Dataset

from storyviz.files import atomic_path, make_readable, write_text_atomic

FORMAT_VERSION = 1
SPLIT_ORDER = ("train", "val", "test", "test_unseen")
_STRING = h5py.string_dtype(encoding="utf-8")
BLOCK = 64  # stories written at once


class DataError(ValueError):
    """A data file or record that is missing or not what was expected (the message names it)."""


# ----------------------------------------------------------------------------------------------- writing


class SplitWriter:
    """Appends story records to one split file; use `write_split` unless you need to stream by hand.

    A story record is a dict: "frames" uint8 (L, H, W, 3); "captions" list[str] (L); optional
    "captions_pronoun" list[str] (L); "labels" {head: (L, C) or (L,)}; "annotation" (JSON-able, usually a
    list of L per-frame dicts); "story_id" str.
    """

    def __init__(self, handle: h5py.File, frames_per_story: int, image_size: int, labels: dict, pronouns: bool):
        self.handle = handle
        self.length = frames_per_story
        self.size = image_size
        self.heads = labels
        self.pronouns = pronouns
        self.count = 0
        self.pending: list[dict] = []
        shape = (0, self.length, self.size, self.size, 3)
        handle.create_dataset(
            "frames",
            shape=shape,
            maxshape=(None, *shape[1:]),
            dtype=np.uint8,
            chunks=(1, *shape[1:]),
            compression="gzip",
            compression_opts=4,
            track_times=False,
        )
        handle.create_dataset(
            "captions", shape=(0, self.length), maxshape=(None, self.length), dtype=_STRING, track_times=False
        )
        if pronouns:
            handle.create_dataset(
                "captions_pronoun",
                shape=(0, self.length),
                maxshape=(None, self.length),
                dtype=_STRING,
                track_times=False,
            )
        handle.create_dataset("annotations", shape=(0,), maxshape=(None,), dtype=_STRING, track_times=False)
        handle.create_dataset("story_ids", shape=(0,), maxshape=(None,), dtype=_STRING, track_times=False)
        group = handle.create_group("labels", track_order=True)
        for head, spec in labels.items():
            if spec["type"] == "multi":
                group.create_dataset(
                    head,
                    shape=(0, self.length, len(spec["classes"])),
                    maxshape=(None, self.length, len(spec["classes"])),
                    dtype=np.uint8,
                    track_times=False,
                )
            else:
                group.create_dataset(
                    head, shape=(0, self.length), maxshape=(None, self.length), dtype=np.int64, track_times=False
                )

    def add(self, record: dict[str, Any]) -> None:
        """Checks one record and queues it; queued records are written in blocks of `BLOCK` stories."""
        where = f"story {record.get('story_id', self.count + len(self.pending))!r}"
        frames = np.asarray(record["frames"])
        expected = (self.length, self.size, self.size, 3)
        if frames.shape != expected or frames.dtype != np.uint8:
            raise DataError(f"{where}: frames are {frames.dtype} {frames.shape}, expected uint8 {expected}")
        captions = [str(caption) for caption in record["captions"]]
        if len(captions) != self.length:
            raise DataError(f"{where}: {len(captions)} captions, expected {self.length}")
        pronoun = [str(caption) for caption in (record.get("captions_pronoun") or captions)]
        if len(pronoun) != self.length:
            raise DataError(f"{where}: {len(pronoun)} pronoun captions, expected {self.length}")
        labels = {}
        given = record.get("labels") or {}
        for head, spec in self.heads.items():
            shape = (self.length, len(spec["classes"])) if spec["type"] == "multi" else (self.length,)
            if head in given:
                value = np.asarray(given[head])
                if value.shape != shape:
                    raise DataError(f"{where}: label {head!r} has shape {value.shape}, expected {shape}")
            else:  # unknown
                value = np.full(shape, -1)
            labels[head] = value.astype(np.uint8 if spec["type"] == "multi" else np.int64)
        self.pending.append(
            {
                "frames": frames,
                "captions": captions,
                "captions_pronoun": pronoun,
                "labels": labels,
                "annotation": json.dumps(record.get("annotation"), sort_keys=True),
                "story_id": str(record.get("story_id", self.count + len(self.pending))),
            }
        )
        if len(self.pending) >= BLOCK:
            self.flush()

    def flush(self) -> None:
        """Writes the queued records."""
        if not self.pending:
            return
        start, stop = self.count, self.count + len(self.pending)
        handle, pending = self.handle, self.pending
        names = ["frames", "captions", "annotations", "story_ids"] + (["captions_pronoun"] if self.pronouns else [])
        datasets = [handle[name] for name in names] + [handle["labels"][head] for head in self.heads]
        for dataset in datasets:
            dataset.resize(stop, axis=0)
        handle["frames"][start:stop] = np.stack([item["frames"] for item in pending])
        handle["captions"][start:stop] = np.array([item["captions"] for item in pending], dtype=object)
        if self.pronouns:
            handle["captions_pronoun"][start:stop] = np.array([item["captions_pronoun"] for item in pending], object)
        handle["annotations"][start:stop] = np.array([item["annotation"] for item in pending], dtype=object)
        handle["story_ids"][start:stop] = np.array([item["story_id"] for item in pending], dtype=object)
        for head in self.heads:
            handle["labels"][head][start:stop] = np.stack([item["labels"][head] for item in pending])
        self.count = stop
        self.pending = []


def write_split(
    path: str | Path,
    records: Iterable[dict[str, Any]],
    frames_per_story: int,
    image_size: int,
    labels: dict[str, dict],
    pronouns: bool = False,
) -> int:
    """Writes all `records` to the split file `path` atomically; returns the number of stories."""
    # no timestamps anywhere: the same records give byte-identical files
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as handle:
        writer = SplitWriter(handle, frames_per_story, image_size, labels, pronouns)
        for record in records:
            writer.add(record)
        writer.flush()
        count = writer.count
    return count


def write_meta(folder: str | Path, meta: dict[str, Any]) -> None:
    """Writes meta.json (adds "format_version")."""
    meta = {"format_version": FORMAT_VERSION, **meta}
    for key in ("name", "kind", "frames_per_story", "image_size", "splits", "labels"):
        if key not in meta:
            raise DataError(f"meta.json: missing field {key!r}")
    write_text_atomic(Path(folder) / "meta.json", json.dumps(meta, indent=2) + "\n")
    make_readable(folder)


# ----------------------------------------------------------------------------------------------- reading


def open_dataset(path: str | Path) -> StoryData:
    """Opens a data set folder (meta.json + one HDF5 file per split)."""
    return StoryData(path)


class StoryData:
    """A data set folder: `.meta` (the dict of meta.json) and `.split(name)` (a lazy Dataset of stories)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not self.path.is_dir():
            raise DataError(f"{self.path}: not a data set folder (expected a folder with meta.json and <split>.h5)")
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: missing; expected the meta.json of a storyviz data set")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise DataError(f"{meta_path}: not valid JSON ({error})") from None
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"{meta_path}: format_version {version!r}, expected {FORMAT_VERSION}")

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def split(self, name: str) -> StorySplit:
        if name not in self.meta["splits"]:
            raise DataError(f"{self.path}: no split {name!r}; available: {', '.join(self.meta['splits'])}")
        return StorySplit(self.path / f"{name}.h5", self.meta)

    def __repr__(self) -> str:
        return f"StoryData({str(self.path)!r}, splits={self.meta['splits']})"


class LazyH5:
    """An HDF5 file opened on first use in each process and never pickled open, so that DataLoader workers and
    distributed training each read through their own handle. Subclasses set `self.path`."""

    path: Path
    _handle: h5py.File | None = None
    _pid: int | None = None

    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"] = None, None
        return state

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class StorySplit(LazyH5, Dataset):
    """The stories of one split, read lazily. `split[i]` -> dict:

    "frames" uint8 (L, H, W, 3); "captions" list[str] (L); "captions_pronoun" list[str] (L) or None;
    "labels" {head: (L, C) uint8 multi-hot or (L,) int64}; "annotation" (list of L per-frame dicts);
    "story_id" str.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.meta = meta
        if not self.path.is_file():
            raise DataError(f"{self.path}: split file missing")
        with h5py.File(self.path, "r") as handle:
            if "frames" not in handle or "captions" not in handle:
                raise DataError(f"{self.path}: not a storyviz split file (expected datasets 'frames', 'captions')")
            self._length = handle["frames"].shape[0]
            self.has_pronouns = "captions_pronoun" in handle
            self.heads = list(handle["labels"]) if "labels" in handle else []

    def __len__(self) -> int:
        return self._length

    def _check(self, index: int) -> int:
        if not -self._length <= index < self._length:
            raise IndexError(f"story {index} out of range for {self.path} ({self._length} stories)")
        return index % self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._check(int(index))
        handle = self._file()
        return {
            "frames": handle["frames"][index],
            "captions": _strings(handle["captions"][index]),
            "captions_pronoun": _strings(handle["captions_pronoun"][index]) if self.has_pronouns else None,
            "labels": {head: handle["labels"][head][index] for head in self.heads},
            "annotation": json.loads(handle["annotations"][index]),
            "story_id": _string(handle["story_ids"][index]),
        }

    def captions(self, index: int) -> list[str]:
        """The captions of story `index` without reading its frames."""
        return _strings(self._file()["captions"][self._check(index)])

    def caption_table(self, pronoun: bool = False) -> list[list[str]]:
        """Every story's captions (N x L) in one read; `pronoun` picks the pronoun versions (plain if absent)."""
        name = "captions_pronoun" if pronoun and self.has_pronouns else "captions"
        return [_strings(row) for row in self._file()[name][:]]

    def frames(self) -> FrameSplit:
        """A Dataset over single frames (story i, frame j)."""
        return FrameSplit(self)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self)):
            yield self[index]


class FrameSplit(Dataset):
    """Single frames of a split. `frames[k]` -> dict: "image" uint8 (H, W, 3); "caption"; "caption_pronoun";
    "labels" {head: (C,) or scalar}; "story_index"; "frame_index"."""

    def __init__(self, stories: StorySplit):
        self.stories = stories
        self.length = int(stories.meta["frames_per_story"])

    def __len__(self) -> int:
        return len(self.stories) * self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range ({len(self)} frames)")
        story, frame = divmod(int(index), self.length)
        handle = self.stories._file()
        pronoun = None
        if self.stories.has_pronouns:
            pronoun = _string(handle["captions_pronoun"][story, frame])
        return {
            "image": handle["frames"][story, frame],
            "caption": _string(handle["captions"][story, frame]),
            "caption_pronoun": pronoun,
            "labels": {head: handle["labels"][head][story, frame] for head in self.stories.heads},
            "story_index": story,
            "frame_index": frame,
        }


def _string(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _strings(values: np.ndarray) -> list[str]:
    return [_string(value) for value in values]
