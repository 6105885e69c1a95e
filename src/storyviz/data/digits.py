"""The minimal DALL-E's task: coloured digits on textured or solid backgrounds, one image per "story".

Glyph shapes are scikit-learn's bundled 8x8 handwritten digits (1,797 of them), upscaled and smoothed; the
glyphs are split disjointly between train / val / test. Captions use the minimal DALL-E's phrasing:
"generate image of 6 in pink and a texture background of stones" or, for a solid background,
"generate image of 6 in pink and a solid background of navy". Labels per image: digit, colour, background
(the textures followed by the solid colours).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_dilation, gaussian_filter

GENERATOR_VERSION = "digits-1"
DIGIT_COLOURS = {
    "red": (235, 40, 40),
    "green": (50, 205, 50),
    "blue": (60, 110, 255),
    "yellow": (255, 225, 30),
    "pink": (255, 120, 200),
    "purple": (170, 80, 230),
    "orange": (255, 150, 20),
    "cyan": (40, 230, 230),
    "white": (250, 250, 250),
}
TEXTURES = ("stones", "bricks", "waves", "stripes", "checks", "dots", "grass", "wood", "clouds", "zigzag")
SOLIDS = {"black": (15, 15, 15), "grey": (110, 110, 110), "navy": (20, 25, 90), "maroon": (100, 20, 30),
          "olive": (90, 90, 20), "indigo": (55, 20, 100)}  # fmt: skip
BACKGROUNDS = TEXTURES + tuple(SOLIDS)
SOLID_PROBABILITY = 0.25
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def label_heads() -> dict[str, dict]:
    return {
        "digit": {"type": "single", "classes": [str(d) for d in range(10)]},
        "colour": {"type": "single", "classes": list(DIGIT_COLOURS)},
        "background": {"type": "single", "classes": list(BACKGROUNDS)},
    }


def describe() -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "colours": list(DIGIT_COLOURS),
        "textures": list(TEXTURES),
        "solids": list(SOLIDS),
        "glyphs": "sklearn.datasets.load_digits (8x8), split disjointly between train/val/test",
    }


@functools.lru_cache(maxsize=1)
def _glyphs() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(images (1797, 8, 8) float in [0, 1], digits (1797,), {split: glyph indices})."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    order = np.random.default_rng(1234).permutation(len(images))
    n_train = int(len(order) * SPLIT_FRACTIONS["train"])
    n_val = int(len(order) * SPLIT_FRACTIONS["val"])
    splits = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return images, bunch.target.astype(np.int64), splits


@functools.lru_cache(maxsize=64)
def texture(name: str, size: int) -> np.ndarray:
    """A tileable-looking texture twice the image size: uint8 (2 size, 2 size, 3), muted so digits stand out."""
    S = 2 * size
    rng = np.random.default_rng([TEXTURES.index(name), 99])
    image = Image.new("RGB", (S, S))
    draw = ImageDraw.Draw(image)
    u = size / 64  # one unit at 64 px
    if name == "stones":
        draw.rectangle([0, 0, S, S], fill=(60, 55, 50))
        for _ in range(int(S * S / (90 * u * u))):
            x, y, r = rng.uniform(0, S), rng.uniform(0, S), rng.uniform(4, 9) * u
            g = int(rng.integers(110, 170))
            draw.ellipse([x - r, y - r * 0.8, x + r, y + r * 0.8], fill=(g, g - 8, g - 18), outline=(45, 40, 35))
    elif name == "bricks":
        draw.rectangle([0, 0, S, S], fill=(200, 190, 170))
        h, w = 8 * u, 16 * u
        for row, y in enumerate(np.arange(0, S, h)):
            for x in np.arange(-w / 2 * (row % 2), S, w):
                shade = int(rng.integers(-20, 20))
                draw.rectangle([x + u, y + u, x + w - u, y + h - u], fill=(150 + shade, 60 + shade // 2, 45))
    elif name == "waves":
        y, x = np.mgrid[0:S, 0:S] / u
        value = 0.5 + 0.5 * np.sin(y / 3.0 + 2.0 * np.sin(x / 8.0))
        return _blend(value, (20, 60, 130), (90, 160, 210))
    elif name == "stripes":
        y, x = np.mgrid[0:S, 0:S] / u
        return _blend(((x + y) // 6 % 2).astype(np.float32), (70, 120, 90), (150, 190, 120))
    elif name == "checks":
        y, x = np.mgrid[0:S, 0:S] / u
        return _blend(((x // 8 + y // 8) % 2).astype(np.float32), (110, 60, 110), (190, 150, 190))
    elif name == "dots":
        draw.rectangle([0, 0, S, S], fill=(60, 110, 120))
        step = 10 * u
        for row, y in enumerate(np.arange(0, S + step, step)):
            for x in np.arange((row % 2) * step / 2, S + step, step):
                r = 2.5 * u
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(220, 200, 120))
    elif name == "grass":
        draw.rectangle([0, 0, S, S], fill=(50, 100, 35))
        for _ in range(int(S * S / (6 * u * u))):
            x, y = rng.uniform(0, S), rng.uniform(0, S)
            g = int(rng.integers(100, 180))
            draw.line([x, y, x + rng.uniform(-2, 2) * u, y - rng.uniform(3, 6) * u], fill=(40, g, 30), width=1)
    elif name == "wood":
        y, x = np.mgrid[0:S, 0:S] / u
        value = 0.5 + 0.5 * np.sin(x / 2.0 + 3.0 * np.sin(y / 20.0) + 0.5 * np.sin(y / 3.0))
        return _blend(value, (100, 60, 30), (175, 120, 70))
    elif name == "clouds":
        small = rng.random((max(4, S // 16), max(4, S // 16))).astype(np.float32)
        value = np.asarray(Image.fromarray(small).resize((S, S), Image.Resampling.BICUBIC))
        value = gaussian_filter(value, 2.0 * u)
        value = (value - value.min()) / max(1e-6, np.ptp(value))
        return _blend(value, (80, 120, 190), (200, 215, 235))
    elif name == "zigzag":
        y, x = np.mgrid[0:S, 0:S] / u
        value = ((y + np.abs((x % 12) - 6)) // 5 % 2).astype(np.float32)
        return _blend(value, (150, 100, 30), (210, 170, 80))
    else:
        raise ValueError(f"unknown texture {name!r}; expected one of {TEXTURES}")
    return np.asarray(image, dtype=np.uint8)


def _blend(value: np.ndarray, low, high) -> np.ndarray:
    value = np.clip(value, 0, 1)[..., None]
    return (np.array(low) * (1 - value) + np.array(high) * value).astype(np.uint8)


def _glyph_mask(glyph: np.ndarray, height: int) -> np.ndarray:
    """An 8x8 glyph upscaled to (height, height) and smoothed into a soft mask in [0, 1]."""
    big = np.asarray(Image.fromarray(glyph).resize((height, height), Image.Resampling.BICUBIC))
    big = gaussian_filter(big, sigma=height / 40)
    return np.clip((big - 0.45) * 5.0, 0.0, 1.0)


def digit_record(seed: int, split: str, index: int, size: int = 64) -> dict:
    """One image record (a story of one frame) of the shared data API."""
    if split not in SPLIT_CODES:
        raise ValueError(f"digits split {split!r}; expected one of {list(SPLIT_CODES)}")
    images, targets, splits = _glyphs()
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index, 11])
    glyph_index = int(rng.choice(splits[split]))
    digit = int(targets[glyph_index])
    colour = list(DIGIT_COLOURS)[int(rng.integers(len(DIGIT_COLOURS)))]
    if rng.random() < SOLID_PROBABILITY:
        background_name = list(SOLIDS)[int(rng.integers(len(SOLIDS)))]
        frame = np.empty((size, size, 3), np.float32)
        frame[:] = SOLIDS[background_name]
        caption = f"generate image of {digit} in {colour} and a solid background of {background_name}"
    else:
        background_name = TEXTURES[int(rng.integers(len(TEXTURES)))]
        x, y = rng.integers(0, size, size=2)
        frame = texture(background_name, size)[y : y + size, x : x + size].astype(np.float32)
        caption = f"generate image of {digit} in {colour} and a texture background of {background_name}"
    height = int(size * rng.uniform(0.65, 0.85))
    mask = _glyph_mask(images[glyph_index], height)
    top, left = (int(np.clip((size - height) // 2 + shift, 0, size - height)) for shift in
                 rng.integers(-size // 16, size // 16 + 1, size=2))  # fmt: skip
    full = np.zeros((size, size), np.float32)
    full[top : top + height, left : left + height] = mask
    outline = binary_dilation(full > 0.5, iterations=max(1, size // 48)).astype(np.float32)
    outline = gaussian_filter(outline, 0.6)[..., None]
    frame = frame * (1 - 0.8 * outline)  # a dark rim keeps the digit readable on any background
    alpha = full[..., None]
    frame = frame * (1 - alpha) + np.array(DIGIT_COLOURS[colour], np.float32) * alpha
    image = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    heads = label_heads()
    return {
        "frames": image[None],
        "captions": [caption],
        "labels": {
            "digit": np.array([digit]),
            "colour": np.array([heads["colour"]["classes"].index(colour)]),
            "background": np.array([heads["background"]["classes"].index(background_name)]),
        },
        "annotation": [
            {
                "digit": digit,
                "colour": colour,
                "background": background_name,
                "background_kind": "solid" if background_name in SOLIDS else "texture",
                "glyph_index": glyph_index,
                "digit_height": height,
                "top": top,
                "left": left,
            }
        ],  # fmt: skip
        "story_id": f"{split}-{index:06d}",
    }
