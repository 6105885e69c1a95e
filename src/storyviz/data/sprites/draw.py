"""Procedural, anti-aliased drawing of the sprites world at any size from 32 to 256 px.

Sprites (one character look x action x held object) and backgrounds (setting x variant) are drawn once with
PIL at 4x resolution, reduced to the target size (that is the anti-aliasing) and cached; a frame is then a
copy of its background with up to three cached sprites alpha-blended into their slots, which is what makes
generation fast (thousands of frames per second at 64 px).

Frame layout for size S: three slots (left, centre, right) of width S // 3; a sprite is (S // 3) wide and
~0.6 S tall and stands on the ground line at 0.93 S.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from storyviz.data.sprites.world import COLOURS, SETTINGS, SLOTS

SUPERSAMPLE = 4
BACKGROUND_VARIANTS = 3
SPRITE_HEIGHT = 1.85  # sprite height in slot widths
GROUND = 0.93  # ground line, as a fraction of the frame height
OUTLINE = (40, 30, 30)
GOLD = (255, 196, 0)
BOW = (235, 20, 120)
NAVY = (25, 35, 110)
OBJECT_COLOURS = {"ball": (230, 40, 40), "apple": (200, 20, 30), "book": (30, 60, 180), "flower": (255, 90, 170)}


def check_size(size: int) -> int:
    if not 32 <= size <= 256:
        raise ValueError(f"sprites image size {size} is out of range; expected 32..256 px")
    return size


def _darker(colour: tuple[int, int, int], factor: float = 0.55) -> tuple[int, int, int]:
    return tuple(int(channel * factor) for channel in colour)


# ------------------------------------------------------------------------------------------------- sprites


@functools.lru_cache(maxsize=20000)
def sprite(size: int, body: str, colour: str, accessory: str, action: str, holding: str | None) -> np.ndarray:
    """One character drawn for frame size `size`: float32 RGBA (h, w, 4), colour premultiplied by alpha,
    values in [0, 255] for RGB and [0, 1] for alpha."""
    width = size // 3
    height = int(round(width * SPRITE_HEIGHT))
    k = SUPERSAMPLE
    image = Image.new("RGBA", (width * k, height * k), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    _draw_character(draw, width * k, height * k, body, COLOURS[colour], accessory, action, holding)
    small = image.resize((width, height), Image.Resampling.BOX)
    array = np.asarray(small, dtype=np.float32)
    alpha = array[..., 3:] / 255.0
    out = np.concatenate([array[..., :3] * alpha, alpha], axis=-1)
    out.setflags(write=False)
    return out


def _draw_character(draw, W, H, body, colour, accessory, action, holding):  # noqa: C901 - one drawing recipe
    """Draws on a transparent canvas W x H (supersampled). Unit u = W (the slot width)."""
    u = W
    line = max(1, int(0.045 * u))
    dark = _darker(colour)
    cx = W / 2
    ground = H - 0.04 * u
    leg = 0.13 * u
    lift = 0.32 * u if action == "jumping" else 0.0
    widths = {"round": 0.7, "tall": 0.52, "square": 0.66, "cone": 0.72}
    heights = {"round": 0.64, "tall": 0.96, "square": 0.66, "cone": 0.82}
    bw, bh = widths[body] * u, heights[body] * u
    if action == "sitting":
        bh *= 0.88
    bottom = ground - lift - (0.04 * u if action == "sitting" else leg)
    top = bottom - bh
    left, right = cx - bw / 2, cx + bw / 2
    if action == "running":
        cx += 0.04 * u
        left, right = left + 0.04 * u, right + 0.04 * u

    # legs
    leg_w = 0.1 * u
    if action == "sitting":
        for side in (-1, 1):
            x = cx + side * bw * 0.28
            draw.ellipse([x - leg_w, bottom - 0.06 * u, x + leg_w, bottom + 0.05 * u], fill=dark, outline=OUTLINE)
    elif action == "jumping":
        for side in (-1, 1):
            x = cx + side * bw * 0.22
            draw.rounded_rectangle([x - leg_w / 2, bottom - 0.02 * u, x + leg_w / 2, bottom + leg * 0.7],
                                   radius=leg_w / 2, fill=dark, outline=OUTLINE)  # fmt: skip
    elif action == "running":
        for side in (-1, 1):
            x0 = cx + side * bw * 0.15
            x1 = x0 + side * 0.14 * u
            draw.line([x0, bottom - 0.02 * u, x1, bottom + leg], fill=dark, width=int(leg_w))
    else:
        for side in (-1, 1):
            x = cx + side * bw * 0.22
            draw.rounded_rectangle([x - leg_w / 2, bottom - 0.02 * u, x + leg_w / 2, bottom + leg],
                                   radius=leg_w / 2, fill=dark, outline=OUTLINE)  # fmt: skip

    # arms: (angle from straight down, in degrees) for the viewer-left and viewer-right arm
    arm_angles = {
        "standing": (35, 35),
        "waving": (35, 160),
        "jumping": (150, 150),
        "sitting": (50, 50),
        "running": (120, 60),
    }[action]
    arm_len = 0.2 * u
    shoulder_y = top + bh * (0.55 if body != "tall" else 0.5)
    hands = []
    for side, angle in zip((-1, 1), arm_angles):
        x0 = cx + side * bw * (0.42 if body != "cone" else 0.3)
        rad = math.radians(angle)
        x1 = x0 + side * arm_len * math.sin(rad)
        y1 = shoulder_y + arm_len * math.cos(rad)
        draw.line([x0, shoulder_y, x1, y1], fill=OUTLINE, width=int(0.09 * u))
        draw.line([x0, shoulder_y, x1, y1], fill=dark, width=int(0.06 * u))
        r = 0.045 * u
        draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=dark)
        hands.append((x1, y1))

    # body
    box = [left, top, right, bottom]
    if body == "round":
        draw.ellipse(box, fill=colour, outline=OUTLINE, width=line)
    elif body == "tall":
        draw.rounded_rectangle(box, radius=bw * 0.5, fill=colour, outline=OUTLINE, width=line)
    elif body == "square":
        draw.rounded_rectangle(box, radius=bw * 0.12, fill=colour, outline=OUTLINE, width=line)
    else:  # cone: a wide-based triangle with a round head
        head_r = bw * 0.26
        points = [(cx - head_r, top + head_r), (cx + head_r, top + head_r), (right, bottom), (left, bottom)]
        draw.polygon(points, fill=colour, outline=OUTLINE, width=line)
        draw.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=colour, outline=OUTLINE, width=line)
        draw.rectangle([cx - head_r + line, top + head_r, cx + head_r - line, top + head_r * 1.6], fill=colour)

    # spots (a marking, under the face)
    if accessory == "spots":
        r = 0.07 * u
        for fx, fy in ((-0.22, 0.62), (0.2, 0.7), (0.0, 0.86), (0.26, 0.4), (-0.27, 0.36)):
            x, y = cx + fx * bw, top + fy * bh
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 245), outline=OUTLINE)

    # face
    eye_y = top + (0.3 if body != "cone" else 0.26) * bh
    eye_dx = 0.12 * u
    eye_r = 0.065 * u
    for side in (-1, 1):
        x = cx + side * eye_dx
        draw.ellipse([x - eye_r, eye_y - eye_r * 1.2, x + eye_r, eye_y + eye_r * 1.2], fill=(255, 255, 255))
        pr = eye_r * 0.55
        draw.ellipse([x - pr, eye_y - pr, x + pr, eye_y + pr], fill=(20, 20, 20))
    mouth_y = eye_y + 0.11 * u
    draw.arc([cx - 0.07 * u, mouth_y - 0.05 * u, cx + 0.07 * u, mouth_y + 0.04 * u], 20, 160, fill=OUTLINE,
             width=max(1, int(0.025 * u)))  # fmt: skip

    if accessory == "glasses":
        r = 0.11 * u
        width = max(2, int(0.04 * u))
        for side in (-1, 1):
            x = cx + side * eye_dx
            draw.ellipse([x - r, eye_y - r, x + r, eye_y + r], outline=(10, 10, 10), width=width)
        draw.line([cx - eye_dx + r, eye_y, cx + eye_dx - r, eye_y], fill=(10, 10, 10), width=width)
    elif accessory == "scarf":
        y0 = eye_y + 0.2 * u
        h = 0.12 * u
        inset = 0.06 * u if body != "cone" else bw * 0.2
        draw.rounded_rectangle([left + inset, y0, right - inset, y0 + h], radius=h / 3, fill=NAVY, outline=OUTLINE)
        for i in range(1, 5):
            x = left + inset + i * (bw - 2 * inset) / 5
            draw.line([x, y0 + 1, x, y0 + h - 1], fill=(255, 255, 255), width=max(1, int(0.035 * u)))
        draw.rectangle([cx + 0.05 * u, y0 + h * 0.5, cx + 0.16 * u, y0 + h * 2.4], fill=NAVY, outline=OUTLINE)
    elif accessory == "hat":
        brim_w, crown_w, crown_h = 0.5 * u, 0.32 * u, 0.26 * u
        y = top + 0.04 * u
        draw.rectangle([cx - crown_w / 2, y - crown_h, cx + crown_w / 2, y], fill=(25, 25, 25), outline=OUTLINE)
        draw.rectangle([cx - crown_w / 2, y - 0.09 * u, cx + crown_w / 2, y - 0.04 * u], fill=(230, 40, 40))
        draw.rounded_rectangle([cx - brim_w / 2, y - 0.05 * u, cx + brim_w / 2, y + 0.02 * u], radius=0.02 * u,
                               fill=(25, 25, 25))  # fmt: skip
    elif accessory == "crown":
        w, h = 0.44 * u, 0.2 * u
        y = top + 0.05 * u
        x0 = cx - w / 2
        points = [(x0, y), (x0, y - h), (x0 + w * 0.25, y - h * 0.5), (cx, y - h * 1.1), (x0 + w * 0.75, y - h * 0.5),
                  (x0 + w, y - h), (x0 + w, y)]  # fmt: skip
        draw.polygon(points, fill=GOLD, outline=(120, 80, 0), width=line)
    elif accessory == "bow":
        w, h = 0.26 * u, 0.2 * u
        y = top + 0.02 * u
        x = cx + 0.1 * u
        draw.polygon([(x, y), (x - w, y - h / 2 - 0.02 * u), (x - w, y + h / 2)], fill=BOW, outline=OUTLINE)
        draw.polygon([(x, y), (x + w, y - h / 2 - 0.02 * u), (x + w, y + h / 2)], fill=BOW, outline=OUTLINE)
        r = 0.06 * u
        draw.ellipse([x - r, y - r, x + r, y + r], fill=BOW, outline=OUTLINE)
    elif accessory == "antennae":
        for side in (-1, 1):
            x0, y0 = cx + side * 0.08 * u, top + 0.04 * u
            x1, y1 = cx + side * 0.2 * u, top - 0.22 * u
            draw.line([x0, y0, x1, y1], fill=(20, 20, 20), width=max(2, int(0.035 * u)))
            r = 0.065 * u
            draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=(250, 240, 80), outline=(20, 20, 20))

    if holding is not None:
        x, y = hands[1]  # the viewer-right hand, pulled in a little so that the object stays in the slot
        _draw_object(draw, u, (min(x, W - 0.16 * u), y), holding)


def _draw_object(draw, u, hand, name):
    x, y = hand
    r = 0.15 * u
    if name == "ball":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=OUTLINE)
        draw.pieslice([x - r, y - r, x + r, y + r], 180, 360, fill=OBJECT_COLOURS["ball"], outline=OUTLINE)
    elif name == "apple":
        draw.ellipse([x - r, y - r * 0.9, x + r, y + r], fill=OBJECT_COLOURS["apple"], outline=OUTLINE)
        draw.line([x, y - r * 0.9, x + r * 0.2, y - r * 1.5], fill=(90, 50, 20), width=max(1, int(0.03 * u)))
        draw.ellipse([x + r * 0.1, y - r * 1.6, x + r * 0.8, y - r * 1.1], fill=(60, 170, 40))
    elif name == "book":
        draw.rectangle([x - r, y - r * 1.2, x + r, y + r * 0.8], fill=OBJECT_COLOURS["book"], outline=OUTLINE)
        draw.line([x, y - r * 1.2, x, y + r * 0.8], fill=(240, 240, 240), width=max(1, int(0.03 * u)))
    elif name == "flower":
        draw.line([x, y + r * 0.5, x, y - r * 1.2], fill=(40, 140, 40), width=max(1, int(0.035 * u)))
        cy = y - r * 1.3
        petal = r * 0.55
        for angle in range(0, 360, 72):
            px = x + math.cos(math.radians(angle)) * petal
            py = cy + math.sin(math.radians(angle)) * petal
            draw.ellipse([px - petal * 0.7, py - petal * 0.7, px + petal * 0.7, py + petal * 0.7],
                         fill=OBJECT_COLOURS["flower"])  # fmt: skip
        draw.ellipse([x - petal * 0.5, cy - petal * 0.5, x + petal * 0.5, cy + petal * 0.5], fill=(255, 220, 0))
    elif name == "balloon":
        top = y - 0.45 * u
        draw.line([x, y, x, top + r], fill=(60, 60, 60), width=max(1, int(0.02 * u)))
        draw.ellipse([x - r, top - r * 1.2, x + r, top + r], fill=(255, 60, 60), outline=OUTLINE)
    else:
        raise ValueError(f"unknown object {name!r}")


# --------------------------------------------------------------------------------------------- backgrounds


@functools.lru_cache(maxsize=512)
def background(size: int, setting: str, variant: int) -> np.ndarray:
    """The background of `setting` (variant 0..BACKGROUND_VARIANTS-1): uint8 (size, size, 3), read-only."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
    k = 2
    S = size * k
    rng = np.random.default_rng([SETTINGS.index(setting), variant, 7])
    image = Image.new("RGB", (S, S))
    draw = ImageDraw.Draw(image)
    horizon = int(S * 0.6)
    globals()[f"_bg_{setting}"](draw, S, horizon, rng)
    array = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.int16)
    # fine texture: a little deterministic noise so that surfaces are not flat
    noise = rng.integers(-4, 5, size=(size, size, 1), dtype=np.int16)
    array = np.clip(array + noise, 0, 255).astype(np.uint8)
    array.setflags(write=False)
    return array


def _sky(draw, S, horizon, top, bottom):
    for y in range(horizon):
        t = y / max(1, horizon - 1)
        draw.line([0, y, S, y], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))


def _cloud(draw, x, y, s, colour=(255, 255, 255)):
    for dx, dy, r in ((0, 0, 1.0), (0.9, 0.2, 0.8), (-0.9, 0.25, 0.75), (0.4, -0.4, 0.7)):
        draw.ellipse([x + (dx - r) * s, y + (dy - r) * s, x + (dx + r) * s, y + (dy + r) * s], fill=colour)


def _bg_park(draw, S, horizon, rng):
    _sky(draw, S, horizon, (120, 190, 245), (200, 230, 250))
    _cloud(draw, rng.uniform(0.15, 0.85) * S, S * 0.14, S * 0.05)
    draw.ellipse([-0.2 * S, horizon - 0.12 * S, 0.7 * S, horizon + 0.25 * S], fill=(110, 185, 80))
    draw.ellipse([0.4 * S, horizon - 0.08 * S, 1.3 * S, horizon + 0.25 * S], fill=(100, 175, 70))
    draw.rectangle([0, horizon, S, S], fill=(125, 200, 90))
    for _ in range(int(S * 0.6)):
        x, y = rng.uniform(0, S), rng.uniform(horizon, S)
        draw.line([x, y, x + rng.uniform(-2, 2), y - S * 0.015], fill=(80, 160, 60), width=1)
    for x in rng.uniform(0.05, 0.95, size=2) * S:
        y = horizon - 0.02 * S
        draw.rectangle([x - 0.015 * S, y - 0.12 * S, x + 0.015 * S, y + 0.02 * S], fill=(110, 75, 40))
        draw.ellipse([x - 0.08 * S, y - 0.26 * S, x + 0.08 * S, y - 0.1 * S], fill=(50, 140, 50))


def _bg_beach(draw, S, horizon, rng):
    _sky(draw, S, horizon, (90, 180, 250), (190, 230, 255))
    sun_x = rng.uniform(0.6, 0.9) * S
    draw.ellipse([sun_x - 0.06 * S, 0.06 * S, sun_x + 0.06 * S, 0.18 * S], fill=(255, 230, 80))
    sea = int(S * 0.52)
    draw.rectangle([0, sea, S, horizon + 0.06 * S], fill=(30, 130, 200))
    for y in np.arange(sea + 0.02 * S, horizon + 0.05 * S, 0.03 * S):
        for x in np.arange(rng.uniform(0, 0.1) * S, S, 0.12 * S):
            draw.arc([x, y, x + 0.06 * S, y + 0.02 * S], 200, 340, fill=(200, 235, 255), width=1)
    draw.rectangle([0, horizon + 0.06 * S, S, S], fill=(240, 215, 150))
    for _ in range(int(S * 0.8)):
        x, y = rng.uniform(0, S), rng.uniform(horizon + 0.06 * S, S)
        draw.point([x, y], fill=(205, 175, 110))


def _bg_forest(draw, S, horizon, rng):
    _sky(draw, S, horizon, (70, 120, 80), (120, 160, 110))
    for x in np.sort(rng.uniform(-0.05, 1.05, size=7)) * S:
        w = rng.uniform(0.03, 0.05) * S
        draw.rectangle([x - w, 0, x + w, horizon + 0.05 * S], fill=(85, 55, 30))
        draw.ellipse([x - 0.14 * S, -0.05 * S, x + 0.14 * S, rng.uniform(0.25, 0.4) * S], fill=(30, 100, 45))
    draw.rectangle([0, horizon, S, S], fill=(70, 110, 45))
    for _ in range(int(S * 0.25)):
        x, y = rng.uniform(0, S), rng.uniform(horizon, S)
        r = S * 0.008
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(110, 80, 40))


def _bg_snow(draw, S, horizon, rng):
    _sky(draw, S, horizon, (170, 185, 210), (225, 232, 240))
    draw.ellipse([-0.3 * S, horizon - 0.2 * S, 0.8 * S, horizon + 0.4 * S], fill=(245, 248, 255))
    draw.rectangle([0, horizon, S, S], fill=(238, 242, 250))
    for _ in range(int(S * 0.3)):
        x, y = rng.uniform(0, S), rng.uniform(0, S)
        r = S * rng.uniform(0.004, 0.01)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
    for x in rng.uniform(0.1, 0.9, size=3) * S:
        draw.line([x - 0.05 * S, horizon + rng.uniform(0.05, 0.3) * S, x + 0.05 * S, horizon + 0.1 * S],
                  fill=(200, 210, 230), width=2)  # fmt: skip


def _bg_house(draw, S, horizon, rng):
    wall = (245, 225, 180)
    draw.rectangle([0, 0, S, horizon], fill=wall)
    for x in np.arange(0, S, 0.08 * S):
        draw.rectangle([x, 0, x + 0.03 * S, horizon], fill=(235, 205, 160))
    wx = rng.uniform(0.15, 0.6) * S
    draw.rectangle([wx, 0.1 * S, wx + 0.26 * S, 0.38 * S], fill=(150, 210, 250), outline=(120, 80, 40), width=3)
    draw.line([wx + 0.13 * S, 0.1 * S, wx + 0.13 * S, 0.38 * S], fill=(120, 80, 40), width=3)
    draw.line([wx, 0.24 * S, wx + 0.26 * S, 0.24 * S], fill=(120, 80, 40), width=3)
    draw.rectangle([0, horizon, S, S], fill=(170, 110, 60))
    for y in np.arange(horizon, S, 0.07 * S):
        draw.line([0, y, S, y], fill=(130, 80, 40), width=2)
        for x in np.arange(rng.uniform(0, 0.2) * S, S, 0.25 * S):
            draw.line([x, y, x, y + 0.07 * S], fill=(130, 80, 40), width=2)


def _bg_town(draw, S, horizon, rng):
    _sky(draw, S, horizon, (150, 200, 240), (215, 235, 250))
    x = -rng.uniform(0, 0.1) * S
    palette = [(200, 90, 80), (230, 180, 90), (140, 160, 200), (180, 130, 170), (120, 170, 140)]
    while x < S:
        w = rng.uniform(0.18, 0.28) * S
        h = rng.uniform(0.25, 0.45) * S
        colour = palette[int(rng.integers(len(palette)))]
        draw.rectangle([x, horizon - h, x + w, horizon], fill=colour, outline=(70, 60, 60))
        for wy in np.arange(horizon - h + 0.04 * S, horizon - 0.06 * S, 0.09 * S):
            for wx in np.arange(x + 0.03 * S, x + w - 0.05 * S, 0.08 * S):
                draw.rectangle([wx, wy, wx + 0.04 * S, wy + 0.05 * S], fill=(255, 245, 170))
        x += w + 0.01 * S
    draw.rectangle([0, horizon, S, S], fill=(150, 150, 155))
    draw.rectangle([0, horizon, S, horizon + 0.05 * S], fill=(195, 195, 190))
    for x in np.arange(0, S, 0.16 * S):
        draw.rectangle([x, 0.8 * S, x + 0.08 * S, 0.82 * S], fill=(245, 245, 245))


def _bg_desert(draw, S, horizon, rng):
    _sky(draw, S, horizon, (250, 170, 90), (255, 225, 160))
    sun_x = rng.uniform(0.15, 0.5) * S
    draw.ellipse([sun_x - 0.07 * S, 0.08 * S, sun_x + 0.07 * S, 0.22 * S], fill=(255, 250, 200))
    draw.ellipse([-0.2 * S, horizon - 0.1 * S, 0.6 * S, horizon + 0.3 * S], fill=(225, 170, 90))
    draw.ellipse([0.4 * S, horizon - 0.06 * S, 1.3 * S, horizon + 0.3 * S], fill=(215, 160, 80))
    draw.rectangle([0, horizon + 0.05 * S, S, S], fill=(235, 190, 110))
    for _ in range(int(S * 0.5)):
        x, y = rng.uniform(0, S), rng.uniform(horizon, S)
        draw.line([x, y, x + 0.02 * S, y], fill=(215, 165, 90), width=1)
    x = rng.uniform(0.05, 0.95) * S
    y = horizon + 0.02 * S
    draw.rounded_rectangle([x - 0.025 * S, y - 0.2 * S, x + 0.025 * S, y], radius=0.02 * S, fill=(60, 140, 60))
    draw.rounded_rectangle([x - 0.08 * S, y - 0.14 * S, x - 0.05 * S, y - 0.06 * S], radius=0.01 * S,
                           fill=(60, 140, 60))  # fmt: skip
    draw.line([x - 0.065 * S, y - 0.07 * S, x, y - 0.07 * S], fill=(60, 140, 60), width=max(1, int(0.025 * S)))


# ---------------------------------------------------------------------------------------------------- frames


def slot_box(size: int, slot: str) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the sprite box of `slot` in a frame of `size` px."""
    width = size // 3
    height = int(round(width * SPRITE_HEIGHT))
    margin = (size - 3 * width) // 2
    x0 = margin + SLOTS.index(slot) * width
    y1 = int(round(size * GROUND)) + int(round(0.04 * width))
    y1 = min(size, y1)
    return x0, y1 - height, x0 + width, y1


def draw_frame(size: int, setting: str, variant: int, characters: list[dict]) -> np.ndarray:
    """A frame: uint8 (size, size, 3). `characters` are dicts with "body", "colour", "accessory", "action",
    "holding" (None or an object) and "slot"."""
    frame = background(size, setting, variant).astype(np.float32)
    for character in characters:
        rgba = sprite(size, character["body"], character["colour"], character["accessory"], character["action"],
                      character["holding"])  # fmt: skip
        x0, y0, x1, y1 = slot_box(size, character["slot"])
        top = max(0, -y0)
        region = frame[y0 + top : y1, x0:x1]
        piece = rgba[top : top + region.shape[0]]
        region *= 1.0 - piece[..., 3:]
        region += piece[..., :3]
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)
