"""A folder of generated frames that any program can write and `evaluate_samples` scores.

    samples/
      samples.json            {"format_version": 1, "data": "<data set name>", "split": "test",
                               "stories": [{"story_index": 3, "story_id": "...", "captions": [...],
                                            "generated": [false, true, true, true, true]}, ...]}
      00003_01.png            frame 1 (0-based) of story 3 of the split, RGB, any size (resized for judging)
      00003_02.png ...        one PNG per generated frame: {story_index:05d}_{frame:02d}.png

`story_index` is the index of the story in the split of the data set; `story_id` must match the data set's
(so samples cannot silently be scored against the wrong stories). `generated[j]` says whether frame j was
generated (continuation: frame 0 is the given source frame and has no PNG). Digits "stories" have one frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from storyviz.files import atomic_dir

FORMAT_VERSION = 1
SAMPLES_FILE = "samples.json"


class SamplesError(ValueError):
    """A samples folder that does not follow the layout (names the file and what was expected)."""


def frame_filename(story_index: int, frame: int) -> str:
    return f"{story_index:05d}_{frame:02d}.png"


@dataclass(frozen=True)
class SampleStory:
    story_index: int
    story_id: str
    captions: list[str]
    generated: list[bool]


@dataclass(frozen=True)
class Samples:
    directory: Path
    data: str
    split: str
    stories: list[SampleStory]

    def frame(self, story: SampleStory, frame: int) -> np.ndarray:
        """The generated frame as uint8 (H, W, 3)."""
        path = self.directory / frame_filename(story.story_index, frame)
        if not path.is_file():
            raise SamplesError(
                f"{path}: missing; {SAMPLES_FILE} marks frame {frame} of story {story.story_id!r} as generated"
            )
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except OSError as error:
            raise SamplesError(f"{path}: not a readable image ({error})") from None

    def generated_frames(self) -> Iterator[tuple[SampleStory, int, np.ndarray]]:
        """(story, frame index, uint8 (H, W, 3) frame) for every generated frame, in story and frame order."""
        for story in self.stories:
            for index, generated in enumerate(story.generated):
                if generated:
                    yield story, index, self.frame(story, index)


def write_samples(
    directory: str | Path, stories: list[dict[str, Any]], data: str, split: str, made_with: dict[str, Any] | None = None
) -> Path:
    """Writes a samples folder atomically.

    stories: [{"story_index": int, "story_id": str, "captions": [str] (L), "generated": [bool] (L),
    "frames": uint8 (L, H, W, 3)}]; only the generated frames are written (the others may be anything).
    made_with: how the frames were made (model, task, sampling options), kept in samples.json as it is.
    """
    directory = Path(directory)
    records = []
    with atomic_dir(directory) as tmp:
        for story in stories:
            generated = [bool(flag) for flag in story["generated"]]
            frames = np.asarray(story["frames"])
            if frames.dtype != np.uint8 or frames.ndim != 4 or len(frames) != len(generated):
                raise SamplesError(
                    f"story {story['story_id']!r}: expected uint8 frames (L={len(generated)}, H, W, 3), got "
                    f"{frames.dtype} {frames.shape}"
                )
            for frame, flag in enumerate(generated):
                if flag:
                    Image.fromarray(frames[frame]).save(tmp / frame_filename(int(story["story_index"]), frame))
            records.append(
                {
                    "story_index": int(story["story_index"]),
                    "story_id": str(story["story_id"]),
                    "captions": list(story["captions"]),
                    "generated": generated,
                }
            )
        payload = {"format_version": FORMAT_VERSION, "data": data, "split": split, "stories": records}
        if made_with:
            payload["made_with"] = made_with
        (tmp / SAMPLES_FILE).write_text(json.dumps(payload, indent=1))
    return directory


def read_samples(directory: str | Path) -> Samples:
    """Reads and checks samples.json (the PNGs are read on demand by `Samples.frame`)."""
    directory = Path(directory)
    path = directory / SAMPLES_FILE
    if not path.is_file():
        raise SamplesError(f"{path}: missing; a samples folder holds {SAMPLES_FILE} and one PNG per generated frame")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SamplesError(f"{path}: not valid JSON ({error})") from None
    if payload.get("format_version") != FORMAT_VERSION:
        raise SamplesError(f"{path}: format_version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    stories = []
    for position, record in enumerate(payload.get("stories", [])):
        try:
            story = SampleStory(
                story_index=int(record["story_index"]),
                story_id=str(record["story_id"]),
                captions=[str(caption) for caption in record["captions"]],
                generated=[bool(flag) for flag in record["generated"]],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise SamplesError(
                f"{path}: stories[{position}] needs story_index, story_id, captions and generated ({error!r})"
            ) from None
        if not any(story.generated):
            raise SamplesError(f"{path}: stories[{position}] ({story.story_id!r}) has no generated frame")
        stories.append(story)
    if not stories:
        raise SamplesError(f"{path}: no stories")
    return Samples(directory, str(payload.get("data", "")), str(payload.get("split", "")), stories)
