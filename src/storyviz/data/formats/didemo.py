"""DiDeMoSV in its published layout (the StoryDALL-E data folder).

Files read from the folder:
    train.json, val.json, test.json   each a JSON list of examples; an example has "desc_to_frame", a list of
                                      [caption, frame_path] pairs (frame_path relative to the folder: an image,
                                      possibly a vertical strip of square sub-frames, or a .npy of frames)
A story is the first frame and the next 2 (3 frames); examples with fewer than 3 pairs are skipped.
"""

from __future__ import annotations

from pathlib import Path

from storyviz.data.formats.common import Source, load_json, one_frame, read_image, require
from storyviz.data.store import DataError

LENGTH = 3


def open_source(src: str | Path) -> Source:
    src = Path(src)
    require(src, "the DiDeMoSV data folder")
    examples, splits = {}, {}
    for name in ("train", "val", "test"):
        path = src / f"{name}.json"
        items = load_json(path, 'a JSON list of examples with "desc_to_frame"')
        if not isinstance(items, list):
            raise DataError(f"{path}: expected a JSON list of examples")
        keep = []
        for i, item in enumerate(items):
            pairs = item.get("desc_to_frame") if isinstance(item, dict) else None
            if not isinstance(pairs, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
                raise DataError(f"{path}: example {i} has no 'desc_to_frame' list of [caption, frame_path] pairs")
            if len(pairs) >= LENGTH:
                keep.append(i)
                examples[(name, i)] = pairs[:LENGTH]
        splits[name] = keep

    def record(split: str, index: int, choose) -> dict:
        pairs = examples[(split, index)]
        frames = [one_frame(read_image(src / str(path), "a DiDeMoSV frame"), choose) for _, path in pairs]
        return {
            "frames": frames,
            "captions": [str(caption).strip() for caption, _ in pairs],
            "labels": {},
            "annotation": [{"path": str(path)} for _, path in pairs],
            "story_id": f"{split}-{index}",
        }

    return Source(name="didemo", frames_per_story=LENGTH, heads={}, splits=splits, record=record,
                  meta={"characters": [], "settings": []})  # fmt: skip
