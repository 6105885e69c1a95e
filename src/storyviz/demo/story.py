"""What the web demo does with a request, as plain functions (the Gradio page in app.py only wires them up).

- `character_gallery(size)`: one frame per named sprites character, standing in a setting, with a caption.
- `build_request(captions, source_path, source_caption, max_frames, image_size)`: the user's form -> a checked
  `StoryRequest` (blank caption boxes are skipped; the source frame is read and fitted to the model's size).
- `sampling_from_form(seed, top_k, top_p, temperature, guidance, candidates)`: checked `SamplingOptions`.
- `run_story(pipeline, request, options, out)`: generates and writes story.png, frame_NN.png, story.gif and
  story.json into `out` with storyviz.output; returns the gallery items and the path of story.png.

Bad input raises `DemoInputError` (a ValueError) whose message is shown to the user as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storyviz import __version__
from storyviz.data.formats.common import square_resize
from storyviz.data.sprites.draw import draw_frame
from storyviz.data.sprites.world import NAMED, SETTING_PHRASES, SETTINGS
from storyviz.output import StoryFileError, read_source_frame, write_story
from storyviz.pipelines.base import SamplingOptions, StoryPipeline, StoryRequest

MAX_CAPTION_BOXES = 8
SPRITES_SIZES = (32, 256)  # the sizes the sprites drawing code supports


class DemoInputError(ValueError):
    """A demo request that cannot be generated; the message says what to change."""


@dataclass(frozen=True)
class GalleryCharacter:
    name: str
    caption: str  # the source caption of the frame, e.g. "Pip is standing in the park."
    frame: np.ndarray  # uint8 (size, size, 3)


def character_gallery(size: int) -> list[GalleryCharacter]:
    """One frame per named character of the sprites world, drawn at `size` px (drawn within 32..256 px and
    resized when the model's size is outside that range), each in its own setting, standing in the centre."""
    draw_size = min(max(size, SPRITES_SIZES[0]), SPRITES_SIZES[1])
    characters = []
    for index, character in enumerate(NAMED):
        setting = SETTINGS[index % len(SETTINGS)]
        look = {"body": character.body, "colour": character.colour, "accessory": character.accessory}
        frame = draw_frame(draw_size, setting, 0, [{**look, "action": "standing", "holding": None, "slot": "centre"}])
        if draw_size != size:
            frame = square_resize(frame, size)
        caption = f"{character.name} is standing {SETTING_PHRASES[setting]}."
        characters.append(GalleryCharacter(character.name, caption, frame))
    return characters


def clean_captions(captions: list[str | None]) -> list[str]:
    """The non-blank captions, stripped, in order."""
    return [caption.strip() for caption in captions if caption and caption.strip()]


def build_request(
    captions: list[str | None],
    source_path: str | Path | None,
    source_caption: str | None,
    max_frames: int,
    image_size: int,
    supports_continuation: bool = True,
) -> StoryRequest:
    """The form's fields -> a StoryRequest. `source_path` is an image file (None: story visualization);
    `max_frames` counts the source frame too. Raises DemoInputError with a message for the user."""
    captions = clean_captions(captions)
    if not captions:
        raise DemoInputError("No captions: write at least one caption.")
    frame = None
    if source_path is not None and str(source_path).strip():
        if not supports_continuation:
            raise DemoInputError("This model draws each caption on its own and takes no source frame; remove it.")
        try:
            frame = read_source_frame(source_path)
        except StoryFileError as error:
            raise DemoInputError(f"The source frame cannot be read: {Path(source_path).name} is not an image "
                                 f"({error}).") from None  # fmt: skip
        frame = square_resize(frame, image_size)
    frames = len(captions) + (frame is not None)
    if frames > max_frames:
        with_source = " (the source frame counts as one)" if frame is not None else ""
        raise DemoInputError(
            f"{frames} frames asked{with_source}, but this model generates at most {max_frames}: "
            f"remove {frames - max_frames} caption(s)."
        )
    source_caption = source_caption.strip() if source_caption and source_caption.strip() else None
    return StoryRequest(
        captions=captions, source_frame=frame, source_caption=source_caption if frame is not None else None
    )


def sampling_from_form(
    seed: float | None,
    top_k: float | None,
    top_p: float | None,
    temperature: float | None,
    guidance: float | None,
    candidates: float | None,
) -> SamplingOptions:
    """The sampling controls (numbers from the page, possibly floats or None) -> checked SamplingOptions."""
    values = {"seed": seed, "top-k": top_k, "top-p": top_p, "temperature": temperature, "guidance": guidance,
              "candidates": candidates}  # fmt: skip
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise DemoInputError(f"Set the sampling control(s): {', '.join(missing)}.")
    for name in ("seed", "top-k", "candidates"):
        if float(values[name]) != int(values[name]):
            raise DemoInputError(f"{name} must be a whole number, got {values[name]}.")
    checks = [
        (int(seed) >= 0, f"seed must be 0 or more, got {int(seed)}"),
        (int(top_k) >= 0, f"top-k must be 0 (off) or more, got {int(top_k)}"),
        (0.0 < float(top_p) <= 1.0, f"top-p must be in (0, 1], got {top_p}"),
        (float(temperature) > 0.0, f"temperature must be above 0, got {temperature}"),
        (float(guidance) >= 0.0, f"guidance must be 0 or more, got {guidance}"),
        (1 <= int(candidates) <= 16, f"candidates must be 1 to 16, got {int(candidates)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DemoInputError(message + ".")
    return SamplingOptions(
        seed=int(seed),
        candidates=int(candidates),
        top_k=int(top_k),
        top_p=float(top_p),
        temperature=float(temperature),
        guidance=float(guidance),
    )


def run_story(
    pipeline: StoryPipeline, request: StoryRequest, options: SamplingOptions, out: str | Path, model: str = ""
) -> tuple[list[tuple[str, str]], Path, float]:
    """Generates one story and writes it into `out` (see storyviz.output.write_story).
    Returns ([(frame file, caption)], story.png path, generation seconds)."""
    start = time.perf_counter()
    result = pipeline.generate([request], options)[0]
    seconds = time.perf_counter() - start
    record = {
        "storyviz_version": __version__,
        "model": {"name": model, **pipeline.describe()},
        "command": {"demo": True},
        "captions": request.captions,
        "source_caption": request.source_caption,
        "seed": options.seed,
        "sampling": options.to_dict(),
        "info": result.info,
        "timing": {"generate_seconds": round(seconds, 3)},
    }
    paths = write_story(out, result, record, request.source_frame, request.source_caption)
    items = [(str(paths[f"frame_{index:02d}.png"]), caption) for index, caption in enumerate(result.captions, 1)]
    return items, paths["story.png"], seconds
