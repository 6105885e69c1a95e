"""Writing an evaluation: report.json, a readable report.md, and grid.png (real frames above generated ones).

out/
  report.json   {"generated": {metric: value}, ["reconstructed": {...},] "real": {...}, "shuffled": {...},
                 "by_frame": {row: {"2": {...}, ...}}, "info": {...}}   (null = does not apply / undefined)
  report.md     the same as tables, with the reference rows explained
  grid.png      for a few stories: real frames, generated frames under them, captions beside
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from storyviz.evaluation.evaluate import ROWS, Evaluation
from storyviz.evaluation.metrics import METRIC_NAMES
from storyviz.files import atomic_file, write_text_atomic

ROW_NOTES = {
    "generated": "the frames under evaluation, against the real frames they stand for",
    "reconstructed": "the model's own ceiling: the real frames encoded and decoded by its image tokenizer, judged "
    "(a token model draws no better than its tokenizer decodes)",
    "real": "ceiling: the real frames judged (judge errors show here); FID is 0 by definition and left out",
    "shuffled": "floor: real frames of other stories at the same positions, judged against this story; its FID "
    "(when the other stories lie outside the evaluation) is what realistic frames that ignore the story reach",
}


def report_dict(evaluation: Evaluation) -> dict[str, Any]:
    """{"generated": {...}, "real": {...}, "shuffled": {...}, "by_frame": {...}, "info": {...}} (JSON-ready)."""
    out: dict[str, Any] = {row: evaluation.rows.get(row, {}) for row in _rows(evaluation)}
    out["by_frame"] = {
        row: {str(position): values for position, values in table.items()}
        for row, table in evaluation.by_frame.items()
        if table
    }
    out["info"] = evaluation.info
    return out


def _rows(evaluation: Evaluation) -> list[str]:
    """The rows to write: "generated", "real" and "shuffled" always, "reconstructed" when it was computed."""
    return [row for row in ROWS if row != "reconstructed" or row in evaluation.rows]


def _format(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _metric_label(name: str, info: dict[str, Any]) -> str:
    if name == "fid_inception" and "fid_inception" in info:
        return info["fid_inception"].split(":")[0]
    return name


def report_markdown(evaluation: Evaluation) -> str:
    """The report as Markdown tables: one row per reference row, one column per metric that applies."""
    info = evaluation.info
    names = [name for name in METRIC_NAMES if any(name in evaluation.rows.get(row, {}) for row in ROWS)]
    lines = [
        "# storyviz evaluation",
        "",
        f"Data set `{info.get('data', '')}`, split `{info.get('split', '')}`: {info.get('stories')} stories, "
        f"{info.get('frames')} evaluated frames.",
        "",
        "| row | " + " | ".join(_metric_label(name, info) for name in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row in _rows(evaluation):
        values = evaluation.rows.get(row, {})
        lines.append(f"| {row} | " + " | ".join(_format(values.get(name)) for name in names) + " |")
    lines += ["", *(f"- **{row}**: {ROW_NOTES[row]}" for row in _rows(evaluation)), ""]
    if "fid_inception" in info:
        lines += [f"FID: {info['fid_inception']}. Lower FID is better; every other metric is better higher.", ""]
    for row, table in evaluation.by_frame.items():
        if not table:
            continue
        judged = [name for name in names if not name.startswith("fid") and any(name in v for v in table.values())]
        lines += [f"## By frame position ({row})", "", "| frame | " + " | ".join(judged) + " |"]
        lines.append("|---|" + "---|" * len(judged))
        for position, values in table.items():
            lines.append(f"| {position} | " + " | ".join(_format(values.get(name)) for name in judged) + " |")
        lines.append("")
    if "judge" in info:
        lines += [f"Judge heads: {', '.join(info['judge']['heads'])}.", ""]
    return "\n".join(lines)


def image_grid(stories: list[dict[str, Any]], max_stories: int = 4, caption_width: int = 420) -> Image.Image:
    """Per story: the real frames in one row, the generated frames under them (blank where not generated), and
    the captions beside them (one line per frame). stories: [{"real": uint8 (L, H, W, 3), "generated":
    {frame: uint8 (h, w, 3)}, "captions": [str]}]."""
    stories = stories[:max_stories]
    if not stories:
        raise ValueError("no stories to draw")
    height, width = np.asarray(stories[0]["real"]).shape[1:3]
    length = max(len(story["real"]) for story in stories)
    pad = 4
    block = 2 * height + 3 * pad
    canvas = Image.new("RGB", (length * (width + pad) + pad + caption_width, block * len(stories)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for number, story in enumerate(stories):
        top = number * block + pad
        for frame, real in enumerate(story["real"]):
            left = pad + frame * (width + pad)
            canvas.paste(Image.fromarray(np.asarray(real)), (left, top))
            made = story["generated"].get(frame)
            if made is None:
                draw.rectangle([left, top + height + pad, left + width - 1, top + 2 * height + pad - 1], fill="#ddd")
            else:
                image = Image.fromarray(np.asarray(made))
                canvas.paste(image.resize((width, height), Image.BICUBIC), (left, top + height + pad))
        text = "\n".join(
            textwrap.shorten(f"{frame + 1}. {caption}", width=caption_width // 6, placeholder="…")
            for frame, caption in enumerate(story["captions"])
        )
        draw.multiline_text((length * (width + pad) + 2 * pad, top), text, fill="black", font=font, spacing=2)
    return canvas


def write_report(evaluation: Evaluation, out_dir: str | Path, max_stories: int = 4) -> Path:
    """Writes report.json, report.md and grid.png into `out_dir` (each file atomically); returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "report.json", json.dumps(report_dict(evaluation), indent=2))
    write_text_atomic(out_dir / "report.md", report_markdown(evaluation))
    if evaluation.stories:
        with atomic_file(out_dir / "grid.png") as handle:
            image_grid(evaluation.stories, max_stories).save(handle, format="PNG")
    return out_dir
