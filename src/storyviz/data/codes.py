"""Pre-computed image codes: a trained image tokenizer run once over every frame of a data set, so that stage-2
training (DALL-E, StoryDALL-E) reads token ids from disk and never runs the tokenizer.

    storyviz data tokenize --tokenizer runs/vqgan/model --data data/sprites --out data/sprites-codes

writes a folder::

    meta.json     {"format_version": 1, "data": path of the data set, "data_name", "image_size", "frames_per_story",
                   "splits": {split: stories}, "tokenizer": {"path", "model_type", "config"}, "grid": [h, w],
                   "codebook_size"}
    {split}.h5    dataset `codes` (N, L, h*w) int16 (int32 when the codebook exceeds 32767), row-major h x w

`open_codes(path).split("train")[i]` -> int64 (L, h*w). The HDF5 file is opened lazily in each process (like the
data store), so DataLoader workers get their own handle. `check_codes_match(codes, data)` refuses codes built
from another data set or image size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from storyviz.data.store import DataError, LazyH5, StoryData, open_dataset
from storyviz.files import atomic_dir
from storyviz.progress import progress
from storyviz.registry import load_model, resolve_model_dir
from storyviz.weights import read_weights_config

FORMAT_VERSION = 1


class CodesError(DataError):
    """A codes folder that is missing, malformed, or does not belong to the data set it is used with."""


# ----------------------------------------------------------------------------------------------- writing


@torch.inference_mode()
def tokenize_dataset(
    tokenizer: str | Path, data: str | Path, out: str | Path, batch_size: int = 64, device: str = "cpu"
) -> dict[str, Any]:
    """Encodes every frame of every split of the data set `data` with the image tokenizer folder `tokenizer`
    and writes the codes folder `out` atomically. Returns its meta (see the module docstring)."""
    tokenizer_dir = resolve_model_dir(tokenizer)
    tokenizer_info = read_weights_config(tokenizer_dir)
    model = load_model(tokenizer_dir, map_location=device).eval()
    dataset = open_dataset(data)
    size = int(dataset.meta["image_size"])
    native = model.grid_size() * model.downsample_factor
    if size != native:
        raise CodesError(
            f"{dataset.path}: frames are {size} px but the image tokenizer {tokenizer_dir} was built for {native} px"
        )
    side = model.grid_size(size)
    codebook = int(model.codebook_size)
    dtype = np.int16 if codebook <= 32767 else np.int32
    length = int(dataset.meta["frames_per_story"])
    meta = {
        "format_version": FORMAT_VERSION,
        "data": str(Path(data).resolve()),
        "data_name": dataset.meta["name"],
        "image_size": size,
        "frames_per_story": length,
        "splits": dict(dataset.meta["splits"]),
        "tokenizer": {
            "path": str(tokenizer_dir.resolve()),
            "model_type": tokenizer_info["model_type"],
            "config": tokenizer_info["config"],
        },
        "grid": [side, side],
        "codebook_size": codebook,
    }
    with atomic_dir(out) as tmp:
        for name in dataset.splits:
            split = dataset.split(name)
            with h5py.File(tmp / f"{name}.h5", "w") as handle:
                codes = handle.create_dataset(
                    "codes", shape=(len(split), length, side * side), dtype=dtype, chunks=True, track_times=False
                )
                stories_per_batch = max(1, batch_size // length)
                starts = range(0, len(split), stories_per_batch)
                for start in progress(starts, desc=f"tokenizing {name}", unit="batch"):
                    stop = min(start + stories_per_batch, len(split))
                    frames = np.stack([split[i]["frames"] for i in range(start, stop)])  # (S, L, H, W, 3)
                    images = torch.from_numpy(frames.reshape(-1, size, size, 3)).to(device)
                    images = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
                    batch_codes = model.encode(images).reshape(stop - start, length, side * side)
                    codes[start:stop] = batch_codes.cpu().numpy().astype(dtype)
            split.close()
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ----------------------------------------------------------------------------------------------- reading


def open_codes(path: str | Path) -> Codes:
    """Opens a codes folder written by `tokenize_dataset` (`storyviz data tokenize`)."""
    return Codes(path)


class Codes:
    """A codes folder: `.meta` (dict of meta.json), `.grid` (h, w), `.codebook_size`, `.split(name)`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise CodesError(f"{meta_path}: missing; expected a codes folder from `storyviz data tokenize`")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise CodesError(f"{meta_path}: not valid JSON ({error})") from None
        if self.meta.get("format_version") != FORMAT_VERSION or "grid" not in self.meta:
            raise CodesError(
                f"{meta_path}: not a codes folder of format_version {FORMAT_VERSION} "
                f"(found format_version {self.meta.get('format_version')!r})"
            )
        self.grid: tuple[int, int] = tuple(self.meta["grid"])
        self.codebook_size: int = int(self.meta["codebook_size"])

    @property
    def image_len(self) -> int:
        """Codes per frame (h * w)."""
        return self.grid[0] * self.grid[1]

    def split(self, name: str) -> CodeSplit:
        if name not in self.meta["splits"]:
            raise CodesError(f"{self.path}: no split {name!r}; available: {', '.join(self.meta['splits'])}")
        return CodeSplit(self.path / f"{name}.h5")

    def __repr__(self) -> str:
        return f"Codes({str(self.path)!r}, grid={self.grid}, codebook_size={self.codebook_size})"


class CodeSplit(LazyH5, Dataset):
    """The codes of one split: `split[i]` -> int64 (L, h*w), the codes of story i; `array()` -> all (N, L, h*w)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CodesError(f"{self.path}: codes file missing")
        with h5py.File(self.path, "r") as handle:
            if "codes" not in handle:
                raise CodesError(f"{self.path}: no dataset 'codes'")
            self.shape: tuple[int, ...] = tuple(handle["codes"].shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"story {index} out of range for {self.path} ({len(self)} stories)")
        return self._file()["codes"][index % len(self)].astype(np.int64)

    def array(self) -> np.ndarray:
        """All codes of the split, int64 (N, L, h*w) (a few MB for 10,000 stories)."""
        return self._file()["codes"][:].astype(np.int64)


def check_codes_match(codes: Codes, data: StoryData) -> None:
    """Raises CodesError unless `codes` were computed from the data set `data` (name, image size, frames per
    story, split sizes)."""
    where = f"codes {codes.path} (from {codes.meta.get('data')})"
    pairs = [
        ("name", codes.meta.get("data_name"), data.meta["name"]),
        ("image_size", codes.meta.get("image_size"), data.meta["image_size"]),
        ("frames_per_story", codes.meta.get("frames_per_story"), data.meta["frames_per_story"]),
        ("splits", codes.meta.get("splits"), data.meta["splits"]),
    ]
    for field, found, expected in pairs:
        if found != expected:
            raise CodesError(
                f"{where} do not belong to the data set {data.path}: {field} is {found!r} there and {expected!r} "
                f"here; run `storyviz data tokenize` on this data set"
            )
