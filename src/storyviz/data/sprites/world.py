"""The sprites story world: attributes, the named recurring characters, held-out unseen characters, guests,
settings, actions and objects. Plain data; drawing is in draw.py and story telling in stories.py.

A character's look is three attributes: a body shape, a colour and an accessory (or marking). The nine named
characters each have their own colour; the six unseen characters recombine attributes in ways that no named
character or guest ever uses, and their names never appear outside the `test_unseen` split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GENERATOR_VERSION = "sprites-1"

BODIES = ("round", "tall", "square", "cone")
BODY_WORDS = {"round": "round", "tall": "tall", "square": "square", "cone": "pointy"}  # in captions
COLOURS = {  # strong, well separated RGB colours (distinct at 64 px)
    "red": (222, 45, 45),
    "orange": (245, 140, 20),
    "yellow": (250, 214, 35),
    "green": (70, 175, 60),
    "blue": (45, 105, 225),
    "purple": (140, 70, 200),
    "pink": (248, 130, 200),
    "brown": (140, 90, 50),
    "teal": (20, 175, 170),
}
ACCESSORIES = ("hat", "crown", "bow", "glasses", "scarf", "antennae", "spots")
ACTIONS = ("standing", "waving", "jumping", "sitting", "running")
OBJECTS = ("ball", "apple", "book", "flower", "balloon")
SLOTS = ("left", "centre", "right")
SETTINGS = ("park", "beach", "forest", "snow", "house", "town", "desert")
SETTING_PHRASES = {
    "park": "in the park",
    "beach": "at the beach",
    "forest": "in the forest",
    "snow": "in the snow",
    "house": "at home",
    "town": "in the town",
    "desert": "in the desert",
}
SETTING_PLACES = {  # "they go to ..."
    "park": "the park",
    "beach": "the beach",
    "forest": "the forest",
    "snow": "the snowy hill",
    "house": "the house",
    "town": "the town",
    "desert": "the desert",
}


@dataclass(frozen=True)
class Character:
    """One character's identity and look. `kind` is "named", "unseen" or "guest"."""

    name: str
    body: str
    colour: str
    accessory: str
    gender: str  # "he" | "she"
    kind: str = "named"

    @property
    def look(self) -> tuple[str, str, str]:
        return (self.body, self.colour, self.accessory)

    def describe(self) -> str:
        """A short description of the look, e.g. "blue and pointy with a crown"."""
        accessory = self.accessory if self.accessory in ("spots", "glasses", "antennae") else f"a {self.accessory}"
        return f"{self.colour} and {BODY_WORDS[self.body]} with {accessory}"

    def to_dict(self) -> dict:
        return asdict(self)


NAMED = (
    Character("Pip", "round", "red", "hat", "he"),
    Character("Luna", "tall", "purple", "crown", "she"),
    Character("Bo", "square", "blue", "glasses", "he"),
    Character("Mimi", "round", "pink", "bow", "she"),
    Character("Toto", "cone", "orange", "scarf", "he"),
    Character("Kiki", "tall", "yellow", "antennae", "she"),
    Character("Rex", "square", "green", "spots", "he"),
    Character("Nell", "cone", "teal", "bow", "she"),
    Character("Bruno", "round", "brown", "glasses", "he"),
)
NAMED_NAMES = tuple(character.name for character in NAMED)

# only in the test_unseen split: names and attribute combinations used nowhere else
UNSEEN = (
    Character("Quill", "cone", "red", "crown", "he", "unseen"),
    Character("Nora", "square", "pink", "scarf", "she", "unseen"),
    Character("Juno", "round", "teal", "hat", "she", "unseen"),
    Character("Felix", "tall", "green", "glasses", "he", "unseen"),
    Character("Hazel", "square", "yellow", "bow", "she", "unseen"),
    Character("Milo", "cone", "blue", "antennae", "he", "unseen"),
)

# one-off guests of train/val/test stories: a random name from this list and a random look
GUEST_NAMES = (
    ("Ada", "she"), ("Bea", "she"), ("Cody", "he"), ("Dex", "he"), ("Ezra", "he"), ("Finn", "he"),
    ("Gus", "he"), ("Ivy", "she"), ("Jade", "she"), ("Lola", "she"), ("Max", "he"), ("Ned", "he"),
    ("Olive", "she"), ("Pia", "she"), ("Ravi", "he"), ("Sam", "he"), ("Tess", "she"), ("Uma", "she"),
    ("Vic", "he"), ("Wren", "she"), ("Yuki", "she"), ("Zed", "he"), ("Arlo", "he"), ("Cleo", "she"),
    ("Dot", "she"), ("Eli", "he"), ("Fern", "she"), ("Hugo", "he"), ("Iris", "she"), ("Otis", "he"),
)  # fmt: skip


def guest_looks() -> list[tuple[str, str, str]]:
    """Every attribute combination a guest may have: all but the named and the unseen characters' looks."""
    taken = {character.look for character in NAMED + UNSEEN}
    return [
        (body, colour, accessory)
        for body in BODIES
        for colour in COLOURS
        for accessory in ACCESSORIES
        if (body, colour, accessory) not in taken
    ]


def label_heads() -> dict[str, dict]:
    """The label heads of a sprites data set (see the shared data API)."""
    heads = {
        "characters": {"type": "multi", "classes": list(NAMED_NAMES)},
        "setting": {"type": "single", "classes": list(SETTINGS)},
    }
    for slot in SLOTS:
        heads[f"{slot}.body"] = {"type": "single", "classes": ["none", *BODIES]}
        heads[f"{slot}.colour"] = {"type": "single", "classes": ["none", *COLOURS]}
        heads[f"{slot}.accessory"] = {"type": "single", "classes": ["none", *ACCESSORIES]}
    return heads


def describe_world() -> dict:
    """The world description stored in meta.json."""
    return {
        "generator_version": GENERATOR_VERSION,
        "characters": [character.to_dict() for character in NAMED],
        "unseen_characters": [character.to_dict() for character in UNSEEN],
        "guest_names": [name for name, _ in GUEST_NAMES],
        "settings": list(SETTINGS),
        "attributes": {"body": list(BODIES), "colour": dict(COLOURS), "accessory": list(ACCESSORIES)},
        "actions": list(ACTIONS),
        "objects": list(OBJECTS),
        "slots": list(SLOTS),
    }
