"""Look twins: a sprites frame drawn again with some characters' looks changed.

A story model often draws the right character in the right place with a wrong body, colour or accessory. A
decoder that reads the source frame (a VQGAN with `reference_resolutions`) is taught to repair that on the codes
of such twins: the twin changes the look of characters that the source frame shows, and the target is the true
frame. Characters absent from the source keep their look, so the codes stay trusted where the source has
nothing to copy. Measured on sprites (benchmarks/RESULTS.md, "A decoder that reads the source frame", "Where
`test_unseen` appearance is lost" and "Weighing the repaired pixels"): colours and, with the discriminator, bodies
are repaired; accessories least, a little more often with the loss weighted on the pixels that a twin changed.
"""

from __future__ import annotations

import numpy as np

from storyviz.data.sprites.draw import draw_frame
from storyviz.data.sprites.world import ACCESSORIES, BODIES, COLOURS

LOOK = {"body": BODIES, "colour": tuple(COLOURS), "accessory": ACCESSORIES}


def changed_look(character: dict, rng: np.random.Generator) -> dict:
    """The character with each attribute redrawn with probability 1/2 (at least one of them changed)."""
    out = dict(character)
    names = [name for name in LOOK if rng.random() < 0.5] or [str(rng.choice(list(LOOK)))]
    for name in names:
        others = [value for value in LOOK[name] if value != character[name]]
        out[name] = others[int(rng.integers(len(others)))]
    return out


def look_twin(frame: dict, source: dict, size: int, share: float, rng: np.random.Generator) -> np.ndarray | None:
    """A frame's annotation -> the frame drawn with the look of each character that is also in `source` (by
    name) changed with probability `share`; None when no look changed (the frame is its own twin)."""
    present = {character["name"] for character in source["characters"]}
    characters, changed = [], False
    for character in frame["characters"]:
        if character["name"] in present and rng.random() < share:
            character, changed = changed_look(character, rng), True
        characters.append(character)
    if not changed:
        return None
    return draw_frame(size, frame["setting"], frame["background_variant"], characters)
