"""VIST (visual storytelling) in its published layout.

Files read from the folder:
    sis/<split>.story-in-sequence.json        {"annotations": [[{"story_id", "photo_flickr_id",
                                              "worker_arranged_photo_order", "text", "original_text", ...}]]}
    dii/<split>.description-in-isolation.json  optional; {"annotations": [[{"photo_flickr_id", "text", ...}]]}
    images/<split>/<photo_flickr_id>.jpg      the photos (.png also accepted)
for split in train, val, test. A story is the 5 photos of one story_id in worker order; its captions are the
SIS sentences ("text", as ARLDM uses them); the DII description of each photo, when there is one, is kept in
the annotation. Photos are centre-cropped to a square.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from storyviz.data.formats.common import Source, load_json, read_image, require
from storyviz.data.store import DataError

LENGTH = 5


def _annotations(path: Path, what: str) -> list[dict]:
    data = load_json(path, what)
    items = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON object with an 'annotations' list")
    out = []
    for i, entry in enumerate(items):
        entry = entry[0] if isinstance(entry, list) and entry else entry
        if not isinstance(entry, dict) or "photo_flickr_id" not in entry:
            raise DataError(f"{path}: annotation {i} lacks 'photo_flickr_id'")
        out.append(entry)
    return out


def _photo(src: Path, split: str, photo: str) -> Path:
    for suffix in (".jpg", ".png", ".jpeg"):
        path = src / "images" / split / f"{photo}{suffix}"
        if path.exists():
            return path
    return src / "images" / split / f"{photo}.jpg"


def open_source(src: str | Path) -> Source:
    src = Path(src)
    require(src, "the VIST data folder")
    stories, splits = {}, {}
    for name in ("train", "val", "test"):
        path = src / "sis" / f"{name}.story-in-sequence.json"
        entries = _annotations(path, "VIST story-in-sequence annotations")
        dii_path = src / "dii" / f"{name}.description-in-isolation.json"
        dii = {}
        if dii_path.exists():
            dii = {str(e["photo_flickr_id"]): e.get("text", "") for e in _annotations(dii_path, "VIST DII annotations")}
        grouped = defaultdict(list)
        for i, entry in enumerate(entries):
            if "story_id" not in entry or "text" not in entry:
                raise DataError(f"{path}: annotation {i} lacks 'story_id' or 'text'")
            grouped[str(entry["story_id"])].append(entry)
        keep = []
        for story_id, items in grouped.items():
            items.sort(key=lambda e: int(e.get("worker_arranged_photo_order", 0)))
            if len(items) == LENGTH:
                keep.append(story_id)
                stories[(name, story_id)] = (items, dii)
        splits[name] = keep

    def record(split: str, story_id: str, choose) -> dict:
        del choose  # one photo per frame
        items, dii = stories[(split, story_id)]
        photos = [str(item["photo_flickr_id"]) for item in items]
        frames = []
        for photo in photos:
            image = read_image(_photo(src, split, photo), f"the VIST photo {photo}")
            if image.ndim != 3:
                raise DataError(f"{_photo(src, split, photo)}: expected a photo (H, W, 3)")
            frames.append(image)
        return {
            "frames": frames,
            "captions": [str(item["text"]).strip() for item in items],
            "labels": {},
            "annotation": [{"photo_flickr_id": p, "dii": dii.get(p)} for p in photos],
            "story_id": story_id,
        }

    return Source(name="vist", frames_per_story=LENGTH, heads={}, splits=splits, record=record,
                  meta={"characters": [], "settings": []})  # fmt: skip
