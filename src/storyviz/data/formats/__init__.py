"""Readers for the published story data sets, and `convert` into storyviz's on-disk format.

Each reader module has `open_source(src) -> Source` (see common.py); the records it yields follow the shared
data API, so a converted set reads exactly like the built-in sprites world.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from storyviz.data.formats.common import Source, chooser, square_resize
from storyviz.data.store import DataError, write_meta, write_split
from storyviz.files import atomic_dir
from storyviz.progress import progress

READERS = {
    "pororo": "pororo",
    "flintstones": "flintstones",
    "didemo": "didemo",
    "vist": "vist",
    "arldm-h5": "arldm_h5",
}


def open_source(kind: str, src: str | Path, swap_rb: bool = False) -> Source:
    if kind not in READERS:
        raise DataError(f"unknown published format {kind!r}; expected one of {', '.join(READERS)}")
    module = importlib.import_module(f"storyviz.data.formats.{READERS[kind]}")
    if kind == "arldm-h5":
        return module.open_source(src, swap_rb=swap_rb)
    if swap_rb:
        raise DataError("--swap-rb applies to arldm-h5 only")
    return module.open_source(src)


def read_stories(source: Source, split: str, size: int, subframe: str = "random", seed: int = 0):
    """Yields the records of one split with frames resized to (size, size)."""
    rng = np.random.default_rng([seed, list(source.splits).index(split)])
    choose = chooser(subframe, rng)
    for key in source.splits[split]:
        record = source.record(split, key, choose)
        record["frames"] = np.stack([square_resize(np.asarray(frame), size) for frame in record["frames"]])
        yield record


def convert(
    kind: str,
    src: str | Path,
    out: str | Path,
    size: int = 128,
    seed: int = 0,
    subframe: str = "random",
    swap_rb: bool = False,
) -> dict[str, Any]:
    """Converts a published data set at `src` into a storyviz data set folder `out` (atomically)."""
    if not 8 <= size <= 1024:
        raise DataError(f"--size {size}: expected 8..1024 px")
    source = open_source(kind, src, swap_rb=swap_rb)
    chooser(subframe, np.random.default_rng(0))  # checks the mode before any work
    counts = {}
    total = sum(len(keys) for keys in source.splits.values())
    with atomic_dir(out) as folder, progress(total=total, desc=f"converting {kind}", unit="story") as bar:
        for split in source.splits:

            def records(split=split):
                for record in read_stories(source, split, size, subframe, seed):
                    bar.update(1)
                    yield record

            counts[split] = write_split(folder / f"{split}.h5", records(), source.frames_per_story, size,
                                        source.heads, pronouns=source.pronouns)  # fmt: skip
        write_meta(
            folder,
            {
                "name": source.name,
                "kind": "stories",
                "frames_per_story": source.frames_per_story,
                "image_size": size,
                "splits": counts,
                "labels": source.heads,
                "source": f"storyviz data convert {kind} (from {Path(src).name}, sub-frame {subframe}, seed {seed})",
                **source.meta,
            },
        )
    return {"path": str(out), "splits": counts}
