"""Shared pieces of the published-format readers: checked file loading, frame strips, resizing.

Only these readers load pickled files (`.npy` with allow_pickle, `.pkl`), because that is how PororoSV and
FlintstonesSV are published; only open such files from a source you trust.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from storyviz.data.store import DataError

SUBFRAME_MODES = ("random", "first", "middle")


@dataclass
class Source:
    """A published data set opened for conversion.

    `splits` maps a split name to a list of story keys; `record(split, key, choose)` returns a story record of
    the shared data API with frames at their native size (`choose(n)` picks one of n sub-frames)."""

    name: str
    frames_per_story: int
    heads: dict[str, dict]
    splits: dict[str, list]
    record: Callable[..., dict]
    meta: dict[str, Any] = field(default_factory=dict)
    pronouns: bool = False


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing; expected {what}")
    return path


def load_json(path: Path, what: str) -> Any:
    require(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON; expected {what} ({error})") from None


def load_pickled_npy(path: Path, what: str, item: bool = False) -> Any:
    """np.load with allow_pickle=True (published PororoSV files are pickled dicts / object arrays)."""
    require(path, what)
    try:
        value = np.load(path, allow_pickle=True, encoding="latin1")
        return value.item() if item else value
    except Exception as error:  # numpy raises many kinds of errors on a broken file
        raise DataError(f"{path}: could not be read; expected {what} ({type(error).__name__}: {error})") from None


def load_pickle(path: Path, what: str) -> Any:
    """pickle.load (published FlintstonesSV files are pickled dicts)."""
    require(path, what)
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except Exception as error:
        raise DataError(f"{path}: could not be read; expected {what} ({type(error).__name__}: {error})") from None


def as_text(value: Any) -> str:
    """A path or id stored as bytes (b'...'), as numpy bytes, or as the string "b'...'" -> str."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8")
    text = str(value)
    if len(text) >= 3 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        return text[2:-1]
    return text


def read_image(path: Path, what: str = "an image") -> np.ndarray:
    """uint8 (H, W, 3) from a PNG/JPEG file or a .npy array (H, W, 3) / (n, H, W, 3)."""
    require(path, what)
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
    except Exception as error:
        raise DataError(f"{path}: could not be read; expected {what} ({type(error).__name__}: {error})") from None
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise DataError(f"{path}: array {array.dtype} {array.shape}; expected {what} as uint8 (..., H, W, 3)")
    return array


def decode_png(data: bytes | np.ndarray, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(bytes(np.asarray(data, dtype=np.uint8).tobytes()))) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as error:
        raise DataError(f"{where}: not a readable encoded image ({type(error).__name__}: {error})") from None


def encode_png(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def one_frame(array: np.ndarray, choose: Callable[[int], int]) -> np.ndarray:
    """One square frame of a vertical strip (H = n W), of a video (n, H, W, 3), or the image itself."""
    if array.ndim == 4:
        return array[choose(array.shape[0])]
    height, width = array.shape[:2]
    if height > width and height % width == 0:
        index = choose(height // width)
        return array[index * width : (index + 1) * width]
    return array


def chooser(mode: str, rng: np.random.Generator) -> Callable[[int], int]:
    if mode == "first":
        return lambda n: 0
    if mode == "middle":
        return lambda n: n // 2
    if mode == "random":
        return lambda n: int(rng.integers(n))
    raise DataError(f"sub-frame choice {mode!r}; expected one of {SUBFRAME_MODES}")


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crops to a square and resizes to (size, size, 3) uint8."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[top : top + side, left : left + side]
    if side != size:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    return np.ascontiguousarray(image, dtype=np.uint8)
