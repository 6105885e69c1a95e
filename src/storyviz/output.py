"""Story files in and out: the captions and source frame a user gives `storyviz generate`, and the story it writes.

Reading: `read_captions_file(path)` (text: one caption per line; JSON or YAML: a list of strings or
{"captions": [...], "source_caption": ...}) and `read_source_frame(path)` (any image Pillow reads -> uint8 (H, W, 3)).

Writing, `write_story(directory, result, record, ...)`, each file atomically into `directory`:
    story.png       the strip: frames side by side at a readable size, each caption wrapped under its frame; the
                    source frame first, marked "source", when given
    frame_01.png    the generated frames at the model's size
    story.gif       the frames (source first) as an animation
    story.json      `record` (how to reproduce: version, model, options, command line, seed, timing, ...) plus
                    "frames": [{"index", "file", "caption", "codes" (token models)}]

`generate_story(out, captions=..., model=..., sampling=...)` is the whole `storyviz generate` job.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from storyviz import __version__
from storyviz.data.formats.common import square_resize
from storyviz.files import atomic_file, write_text_atomic
from storyviz.pipelines.base import StoryRequest, StoryResult, load_pipeline
from storyviz.progress import progress
from storyviz.registry import resolve_model_dir

CAPTION_FONT_PX = 14
NUMBER_LIST = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")
MARGIN = 8


class StoryFileError(ValueError):
    """A captions file or source image that cannot be read as asked (the message names the file)."""


# ----------------------------------------------------------------------------------------------- reading


def read_captions_file(path: str | Path) -> tuple[list[str], str | None]:
    """Returns (captions, source_caption or None) from a .txt (one caption per line, blank lines skipped),
    .json or .yaml/.yml file (a list of strings, or {"captions": [...], "source_caption": "..."})."""
    path = Path(path)
    if not path.is_file():
        raise StoryFileError(f"{path}: captions file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise StoryFileError(f"{path}: cannot be read as UTF-8 text ({error})") from None
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        return [line.strip() for line in text.splitlines() if line.strip()], None
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise StoryFileError(f"{path}: not valid {suffix[1:].upper()} ({error})") from None
    source_caption = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"captions", "source_caption"})
        if unknown or "captions" not in data:
            raise StoryFileError(
                f"{path}: expected the fields 'captions' and optionally 'source_caption', got {sorted(data)}"
            )
        source_caption = data.get("source_caption")
        if source_caption is not None and not isinstance(source_caption, str):
            raise StoryFileError(f"{path}: source_caption must be a string, got {source_caption!r}")
        data = data["captions"]
    if not isinstance(data, list) or not all(isinstance(caption, str) for caption in data):
        raise StoryFileError(f"{path}: captions must be a list of strings")
    return [caption.strip() for caption in data], source_caption


def read_source_frame(path: str | Path) -> np.ndarray:
    """Any image Pillow reads -> uint8 (H, W, 3) RGB (the pipeline resizes and crops it)."""
    path = Path(path)
    if not path.is_file():
        raise StoryFileError(f"{path}: source frame not found")
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise StoryFileError(f"{path}: not an image Pillow can read ({type(error).__name__}: {error})") from None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- writing


def _font(size: int = CAPTION_FONT_PX) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (a word longer than a line is broken by characters)."""
    lines: list[str] = []
    for word in text.split():
        pieces = [word] if draw.textlength(word, font=font) <= width else textwrap.wrap(word, max(1, len(word) // 3))
        for piece in pieces:
            candidate = f"{lines[-1]} {piece}" if lines else piece
            if lines and draw.textlength(candidate, font=font) <= width:
                lines[-1] = candidate
            else:
                lines.append(piece)
    return lines or [""]


def _upscale(frame: np.ndarray, size: int) -> Image.Image:
    image = Image.fromarray(frame)
    if image.size != (size, size):
        resample = Image.Resampling.NEAREST if size % image.size[0] == 0 else Image.Resampling.BICUBIC
        image = image.resize((size, size), resample)
    return image


def story_strip(
    frames: list[np.ndarray],
    captions: list[str],
    source_frame: np.ndarray | None = None,
    source_caption: str | None = None,
    frame_px: int = 256,
) -> Image.Image:
    """The story as one RGB image: frames (uint8 (H, W, 3)) side by side at frame_px, captions wrapped under
    them; the source frame first, labelled "source", with a border."""
    tiles = [(_upscale(frame, frame_px), caption, False) for frame, caption in zip(frames, captions)]
    if source_frame is not None:
        tiles.insert(0, (_upscale(source_frame, frame_px), source_caption or "", True))
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(measure, caption, font, frame_px - 2 * MARGIN) for _, caption, _ in tiles]
    line_px = CAPTION_FONT_PX + 4
    text_px = MARGIN * 2 + line_px * (max(len(lines) for lines in wrapped) + 1)
    width = len(tiles) * frame_px + (len(tiles) + 1) * MARGIN
    strip = Image.new("RGB", (width, frame_px + 2 * MARGIN + text_px), "white")
    draw = ImageDraw.Draw(strip)
    for index, ((tile, _, is_source), lines) in enumerate(zip(tiles, wrapped)):
        left = MARGIN + index * (frame_px + MARGIN)
        strip.paste(tile, (left, MARGIN))
        top = MARGIN * 2 + frame_px
        label = "source" if is_source else f"frame {index + (0 if source_frame is not None else 1)}"
        if is_source:
            draw.rectangle(
                [left - 3, MARGIN - 3, left + frame_px + 2, MARGIN + frame_px + 2], outline=(200, 40, 40), width=3
            )
        draw.text((left, top), label, fill=(200, 40, 40) if is_source else (110, 110, 110), font=font)
        for number, line in enumerate(lines, start=1):
            draw.text((left, top + number * line_px), line, fill="black", font=font)
    return strip


def _save_image(image: Image.Image, path: Path, **kwargs: Any) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format=path.suffix[1:].upper(), **kwargs)
    with atomic_file(path) as handle:
        handle.write(buffer.getvalue())


def _compact_number_lists(text: str) -> str:
    """Puts JSON lists of plain numbers (codes, say) on one line instead of one number per line."""
    return NUMBER_LIST.sub(
        lambda match: "[" + ", ".join(item.strip() for item in match.group(1).split(",")) + "]", text
    )


def write_story(
    directory: str | Path,
    result: StoryResult,
    record: dict[str, Any],
    source_frame: np.ndarray | None = None,
    source_caption: str | None = None,
    frame_px: int = 256,
    gif_ms: int = 800,
) -> dict[str, Path]:
    """Writes story.png, frame_NN.png, story.gif and story.json into `directory` (see the module docstring);
    stale frame files of an earlier, longer story there are removed. Returns {name: path}."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise StoryFileError(f"{directory}: exists and is not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    entries = []
    for index, (frame, caption) in enumerate(zip(result.frames, result.captions), start=1):
        path = directory / f"frame_{index:02d}.png"
        _save_image(Image.fromarray(frame), path)
        written[path.name] = path
        entry: dict[str, Any] = {"index": index, "file": path.name, "caption": caption}
        if result.codes is not None:
            entry["codes"] = [int(code) for code in result.codes[index - 1]]
        entries.append(entry)
    for stale in directory.glob("frame_*.png"):
        if stale.name not in written:
            stale.unlink()
    strip = story_strip(result.frames, result.captions, source_frame, source_caption, frame_px)
    _save_image(strip, directory / "story.png")
    sequence = ([source_frame] if source_frame is not None else []) + list(result.frames)
    images = [_upscale(frame, frame_px) for frame in sequence]
    _save_image(images[0], directory / "story.gif", save_all=True, append_images=images[1:], duration=gif_ms, loop=0)
    payload = {**record, "frames": entries}
    write_text_atomic(directory / "story.json", _compact_number_lists(json.dumps(payload, indent=2)) + "\n")
    written.update({name: directory / name for name in ("story.png", "story.gif", "story.json")})
    return written


# ----------------------------------------------------------------------------------------------- the whole job


def generate_story(
    out: str | Path,
    captions: list[str] | None = None,
    captions_file: str | Path | None = None,
    source_frame: str | Path | None = None,
    source_caption: str | None = None,
    model: str | Path | None = None,
    sampling: dict[str, Any] | None = None,
    device: str = "cpu",
    frame_px: int = 256,
    command: dict[str, Any] | None = None,
    int8: bool = False,
    scorer: str | Path | None = None,
) -> dict[str, Path]:
    """What `storyviz generate` does: reads the captions (given and from `captions_file`) and the source frame,
    loads the model (`load_pipeline`; None = the bundled default), generates with a progress bar and writes the
    story into `out` (see `write_story`); `sampling` changes the model's sampling defaults (`StoryPipeline.sampling`);
    `command` (the command line and its parsed options) goes into story.json; `int8` loads a token model with int8
    weights; `scorer` (a scorer-bundle folder) re-ranks its candidates. Returns {file name: path}."""
    captions = list(captions or [])
    if captions_file is not None:
        from_file, file_source_caption = read_captions_file(captions_file)
        captions += from_file
        source_caption = source_caption if source_caption is not None else file_source_caption
    captions = [caption.strip() for caption in captions]
    if not captions:
        raise StoryFileError("no captions: give --caption (repeatable) or --captions FILE")
    empty = [index + 1 for index, caption in enumerate(captions) if not caption]
    if empty:
        raise StoryFileError(f"caption(s) {empty} are empty")
    frame = read_source_frame(source_frame) if source_frame is not None else None

    start = time.perf_counter()
    model_dir = resolve_model_dir(model)
    pipeline = load_pipeline(model_dir, device=device, int8=int8, scorer=scorer)
    loaded = time.perf_counter()
    options = pipeline.sampling.replace(**(sampling or {}))
    if len(captions) > pipeline.max_frames:
        raise StoryFileError(
            f"{len(captions)} captions, but the model {model_dir} generates at most {pipeline.max_frames} frames"
        )
    if frame is not None and not pipeline.supports_continuation:
        raise StoryFileError(
            f"the model {model_dir} ({pipeline.model_type}) draws each caption on its own and takes no source frame"
        )
    if frame is not None:
        frame = square_resize(frame, pipeline.image_size)
    request = StoryRequest(captions=captions, source_frame=frame, source_caption=source_caption)
    with progress(total=1, desc="generating", unit=pipeline.progress_unit) as bar:

        def report(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)  # redrawn at most every 0.1 s

        result = pipeline.generate([request], options, progress=report)[0]
    generated = time.perf_counter()
    record = {
        "storyviz_version": __version__,
        "model": {
            "path": str(model_dir.resolve()),
            "name": None if model is None else str(model),
            **pipeline.describe(),
        },
        "command": command,
        "captions": captions,
        "source_frame": None
        if source_frame is None
        else {"file": str(Path(source_frame).resolve()), "sha256": file_sha256(source_frame)},
        "source_caption": source_caption,
        "seed": options.seed,
        "sampling": options.to_dict(),
        "info": result.info,
        "timing": {"load_seconds": round(loaded - start, 3), "generate_seconds": round(generated - loaded, 3)},
    }
    return write_story(out, result, record, frame, source_caption, frame_px)
