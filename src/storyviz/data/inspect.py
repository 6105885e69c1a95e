"""Summaries and contact sheets of a data set folder (`storyviz data inspect`)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from storyviz.data.store import open_dataset
from storyviz.files import atomic_file


def summarize(path: str | Path, examples: int = 3) -> dict[str, Any]:
    """{"name", "kind", "image_size", "splits": {split: {"stories", "frames_per_story"}}, "characters",
    "settings", "labels": {head: number of classes}, "examples": [captions of the first stories]}."""
    data = open_dataset(path)
    meta = data.meta
    length = int(meta["frames_per_story"])
    splits = {}
    for name in data.splits:
        split = data.split(name)
        splits[name] = {"stories": len(split), "frames_per_story": length}
    first = data.split(data.splits[0])
    heads = meta.get("labels", {})
    characters = meta.get("characters") or heads.get("characters", {}).get("classes", [])
    settings = meta.get("settings") or heads.get("setting", {}).get("classes", [])
    return {
        "path": str(path),
        "name": meta.get("name"),
        "kind": meta.get("kind"),
        "image_size": meta.get("image_size"),
        "splits": splits,
        "characters": list(characters),
        "settings": list(settings),
        "labels": {head: len(spec["classes"]) for head, spec in heads.items()},
        "examples": [first.captions(i) for i in range(min(examples, len(first)))],
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['path']}: {summary['name']} ({summary['kind']}, {summary['image_size']} px)"]
    for name, split in summary["splits"].items():
        lines.append(f"  {name:12s} {split['stories']:7d} stories x {split['frames_per_story']} frames")
    if summary["characters"]:
        lines.append(f"  characters: {', '.join(summary['characters'])}")
    if summary["settings"]:
        lines.append(f"  settings:   {', '.join(summary['settings'])}")
    for index, captions in enumerate(summary["examples"]):
        lines.append(f"  example {index}:")
        lines += [f"    {j + 1}. {caption}" for j, caption in enumerate(captions)]
    return "\n".join(lines)


def contact_sheet(
    path: str | Path, out: str | Path, split: str | None = None, stories: int = 4, frame_px: int = 128
) -> Path:
    """Draws `stories` stories of `split` (first split by default) as rows of frames with captions under each
    frame, and writes a PNG to `out`."""
    data = open_dataset(path)
    split = split or data.splits[0]
    items = data.split(split)
    count = min(stories, len(items))
    length = int(data.meta["frames_per_story"])
    columns = min(length, 5) if length > 1 else min(8, count)
    try:
        font = ImageFont.load_default(size=max(9, frame_px // 11))
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    chars_per_line = max(12, int(frame_px / (0.55 * max(9, frame_px // 11))))
    text_lines = 6
    line_height = max(9, frame_px // 11) + 2
    cell_h = frame_px + text_lines * line_height + 6
    gap = 4
    if length > 1:
        cells = [(i, j) for i in range(count) for j in range(columns)]
        rows = count
    else:
        count = min(stories * columns, len(items))
        cells = [(i, 0) for i in range(count)]
        rows = (count + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (frame_px + gap) + gap, rows * (cell_h + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    cache: dict[int, dict] = {}
    for k, (story, frame) in enumerate(cells):
        record = cache.setdefault(story, items[story])
        image = Image.fromarray(np.asarray(record["frames"][frame])).resize(
            (frame_px, frame_px), Image.Resampling.LANCZOS
        )
        row, column = (story, frame) if length > 1 else divmod(k, columns)
        x, y = gap + column * (frame_px + gap), gap + row * (cell_h + gap)
        sheet.paste(image, (x, y))
        lines = textwrap.wrap(record["captions"][frame], chars_per_line)[:text_lines]
        for n, line in enumerate(lines):
            draw.text((x + 1, y + frame_px + 3 + n * line_height), line, fill=(20, 20, 20), font=font)
    out = Path(out)
    with atomic_file(out) as handle:
        sheet.save(handle, format="PNG", optimize=True)
    return out
