"""Sentence embeddings of every caption of a split, computed once with the packaged MiniLM and cached on disk.

StoryDALL-E's story encoder reads one 384-d vector per caption. Computing them is the slow part of reading a
story, so they are prepared once per (split, caption version) and stored as `minilm-{split}-{version}.npy`
(float16, (N, L, 384)) in a cache folder (the pre-computed codes folder, by convention), written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from storyviz.data.store import DataError, open_dataset
from storyviz.files import atomic_file
from storyviz.progress import progress

Version = Literal["plain", "pronoun"]


def story_sentence_embeddings(
    data_path: str | Path, split: str, version: Version, cache_dir: str | Path, batch_size: int = 256
) -> np.ndarray:
    """(N, L, 384) float16 MiniLM sentence embeddings of a split's captions, from the cache or computed now."""
    from storyviz.text.minilm import HIDDEN_SIZE, MiniLM

    path = Path(cache_dir) / f"minilm-{split}-{version}.npy"
    captions = open_dataset(data_path).split(split).caption_table(pronoun=version == "pronoun")
    count, length = len(captions), len(captions[0]) if captions else 0
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: unreadable sentence-embedding cache ({error}); delete it to recompute") from None
        if cached.shape == (count, length, HIDDEN_SIZE):
            return cached
        raise DataError(
            f"{path}: shape {cached.shape}, expected {(count, length, HIDDEN_SIZE)}; delete it to recompute"
        )
    encoder = MiniLM()
    # sorted by length, so that a batch pads little
    unique = sorted(dict.fromkeys(caption for row in captions for caption in row), key=len)
    vectors: dict[str, np.ndarray] = {}
    for start in progress(range(0, len(unique), batch_size), desc=f"MiniLM {split}/{version}", unit="batch"):
        chunk = unique[start : start + batch_size]
        for caption, vector in zip(chunk, encoder.sentence_embeddings(chunk).numpy()):
            vectors[caption] = vector.astype(np.float16)
    out = np.zeros((count, length, HIDDEN_SIZE), dtype=np.float16)
    for story, row in enumerate(captions):
        for frame, caption in enumerate(row):
            out[story, frame] = vectors[caption]
    with atomic_file(path) as handle:
        np.save(handle, out, allow_pickle=False)
    return out
