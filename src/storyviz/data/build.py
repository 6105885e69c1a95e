"""Builds the built-in data sets (sprites stories, digits images) into storyviz's on-disk format."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from storyviz.data.store import write_meta, write_split
from storyviz.files import atomic_dir
from storyviz.progress import progress

KINDS = ("sprites", "digits")


def split_sizes(kind: str, count: int) -> dict[str, int]:
    """Stories per split: `count` for train, a tenth of it (at least 20) for each other split."""
    if count < 1:
        raise ValueError(f"--stories {count}: expected at least 1")
    other = max(20, count // 10)
    names = ("train", "val", "test", "test_unseen") if kind == "sprites" else ("train", "val", "test")
    return {name: count if name == "train" else other for name in names}


def build(
    kind: str,
    out: str | Path,
    count: int | None = None,
    size: int = 64,
    seed: int = 0,
    guest_share: float | None = None,
) -> dict[str, Any]:
    """Builds `kind` ("sprites" or "digits") into the folder `out` (replaced atomically when complete).

    guest_share (sprites only): the share of stories with a guest, in every split but test_unseen; None: the
    world's default (0.35). The data set's meta.json records it.

    Returns a summary: {"path", "splits": {split: stories}, "frames", "seconds", "frames_per_second"}.
    """
    if kind == "sprites":
        from storyviz.data.sprites import world
        from storyviz.data.sprites.draw import check_size
        from storyviz.data.sprites.stories import GUEST_PROBABILITY, story_record

        check_size(size)
        guest_share = GUEST_PROBABILITY if guest_share is None else guest_share
        if not 0.0 <= guest_share <= 1.0:
            raise ValueError(f"guest share {guest_share}: expected a probability in [0, 1]")
        count = 10_000 if count is None else count
        make: Callable[[int, str, int, int], dict] = functools.partial(story_record, guest_share=guest_share)
        length, heads, pronouns = 5, world.label_heads(), True
        description = {"world": world.describe_world(), "characters": list(world.NAMED_NAMES),
                       "settings": list(world.SETTINGS), "guest_share": guest_share}  # fmt: skip
        kind_name = "stories"
    elif kind == "digits":
        from storyviz.data import digits

        if guest_share is not None:
            raise ValueError("guest share: only the sprites world has guests")
        if not 8 <= size <= 256:
            raise ValueError(f"digits image size {size} is out of range; expected 8..256 px")
        count = 10_000 if count is None else count
        make = digits.digit_record
        length, heads, pronouns = 1, digits.label_heads(), False
        description = {"world": digits.describe(), "characters": [], "settings": list(digits.BACKGROUNDS)}
        kind_name = "images"
    else:
        raise ValueError(f"unknown data set {kind!r} to build; expected one of {KINDS}")

    sizes = split_sizes(kind, count)
    total = sum(sizes.values())
    start = time.perf_counter()
    with atomic_dir(out) as folder, progress(total=total * length, desc=f"building {kind}", unit="frame") as bar:

        def records(split: str) -> Iterator[dict]:
            for index in range(sizes[split]):
                yield make(seed, split, index, size)
                bar.update(length)

        for split in sizes:
            write_split(folder / f"{split}.h5", records(split), length, size, heads, pronouns=pronouns)
        write_meta(
            folder,
            {
                "name": kind,
                "kind": kind_name,
                "frames_per_story": length,
                "image_size": size,
                "splits": sizes,
                "labels": heads,
                "source": "storyviz data build",
                "seed": seed,
                **description,
            },
        )
    seconds = time.perf_counter() - start
    return {
        "path": str(out),
        "splits": sizes,
        "frames": total * length,
        "seconds": round(seconds, 2),
        "frames_per_second": round(total * length / max(seconds, 1e-9), 1),
    }
