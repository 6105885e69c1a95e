"""Coherent 5-frame stories in the sprites world, with plain and pronoun captions and full ground truth.

Rules every story follows (the tests check them):
- frame 1 shows 1-3 characters; a guest (train/val/test) or an unseen character (test_unseen) is always in
  frame 1 and stays to the end, and frame 1's caption describes its look;
- a character is in a frame iff it was in the previous one, unless that frame's caption says it leaves
  (absent from that frame on) or arrives (present from that frame on);
- the setting changes only in a frame whose caption says they go somewhere; characters keep their slot;
- every caption names every character in its frame (the pronoun version says he / she / they where the
  referent is clear from the previous caption).
A story is a pure function of (seed, split, index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storyviz.data.sprites.draw import BACKGROUND_VARIANTS, draw_frame
from storyviz.data.sprites.world import (
    ACCESSORIES,
    ACTIONS,
    BODIES,
    COLOURS,
    GUEST_NAMES,
    NAMED,
    NAMED_NAMES,
    OBJECTS,
    SETTING_PHRASES,
    SETTING_PLACES,
    SETTINGS,
    SLOTS,
    UNSEEN,
    Character,
    guest_looks,
)

GUEST_LOOKS = guest_looks()
GUEST_PROBABILITY = 0.35

ACTION_PHRASES = {
    "standing": ("stands", "is standing", "stands still"),
    "waving": ("waves", "is waving", "waves hello"),
    "jumping": ("jumps", "is jumping", "jumps up high", "leaps"),
    "sitting": ("sits", "is sitting", "sits down"),
    "running": ("runs", "is running", "runs around"),
}
SIMPLE_ACTION = {"standing": "stands", "waving": "waves", "jumping": "jumps", "sitting": "sits down", "running": "runs"}
HOLDING_PHRASES = ("with {}", "holding {}")
ARRIVE = ("{} arrives and {}", "{} comes along and {}", "{} joins in and {}")
LEAVE = ("{} leaves", "{} goes home", "{} waves goodbye and leaves", "{} walks away")
GO = ("{} go to {}", "{} walk to {}", "{} head to {}")
GO_ONE = ("{} goes to {}", "{} walks to {}", "{} heads to {}")
PICK = ("{} picks up {} and {}", "{} finds {} and {}", "{} gets {} and {}")
DROP = ("{} puts the {} down and {}", "{} drops the {} and {}")
EVENT_WEIGHTS = {"act": 3.0, "arrive": 1.5, "leave": 1.2, "go": 1.5, "pick": 1.0, "drop": 0.6}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "test_unseen": 3}


@dataclass
class Actor:
    character: Character
    slot: str
    action: str
    holding: str | None = None

    def state(self) -> dict:
        return {**self.character.to_dict(), "slot": self.slot, "action": self.action, "holding": self.holding}


class _Caption:
    """A caption as sentences of parts; a part is a str or a subject (tuple of actors), rendered with names
    or with pronouns."""

    def __init__(self):
        self.sentences: list[list] = []

    def add(self, *parts) -> None:
        self.sentences.append(list(parts))

    def subjects(self) -> set[str]:
        return {a.character.name for s in self.sentences for p in s if isinstance(p, tuple) for a in p}

    def render(self, pronoun_ok=None) -> str:
        out = []
        for sentence in self.sentences:
            words = []
            for part in sentence:
                if isinstance(part, tuple):
                    pronoun = pronoun_ok(part) if pronoun_ok else None
                    words.append(pronoun or _names(part))
                else:
                    words.append(part)
            text = "".join(words)
            out.append(text[0].upper() + text[1:] + ".")
        return " ".join(out)


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _names(actors: tuple) -> str:
    names = [actor.character.name for actor in actors]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _action_phrase(rng, actor: Actor) -> str:
    phrase = _pick(rng, ACTION_PHRASES[actor.action])
    if actor.holding:
        phrase += " " + _pick(rng, HOLDING_PHRASES).format(article(actor.holding))
    return phrase


def _action_clauses(rng, caption: _Caption, actors: list[Actor], tail: str = "") -> None:
    """One sentence: "A waves, B sits and C jumps{tail}"."""
    if not actors:
        return
    parts = []
    for i, actor in enumerate(actors):
        if i:
            parts.append(" and " if i == len(actors) - 1 else ", ")
        parts += [(actor,), " " + _action_phrase(rng, actor)]
    caption.add(*parts, tail)


def make_guest(rng: np.random.Generator) -> Character:
    name, gender = _pick(rng, GUEST_NAMES)
    body, colour, accessory = _pick(rng, GUEST_LOOKS)
    return Character(name, body, colour, accessory, gender, "guest")


def plan_story(
    rng: np.random.Generator, unseen: bool, length: int = 5, guest_share: float = GUEST_PROBABILITY
) -> list[dict]:
    """The frames of one story: [{"setting", "variant", "actors": [Actor], "caption": _Caption}] (L).

    guest_share: the probability that a story outside test_unseen has a guest (a character seen only in that story,
    whose look frame 1's caption describes and later frames must carry over).
    """
    setting = _pick(rng, SETTINGS)
    variant = int(rng.integers(BACKGROUND_VARIANTS))
    if unseen:
        count = 2 if rng.random() < 0.25 else 1
        newcomers = [UNSEEN[i] for i in rng.choice(len(UNSEEN), size=count, replace=False)]
    else:
        newcomers = [make_guest(rng)] if rng.random() < guest_share else []
    size = max(len(newcomers), int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])))
    if len(newcomers) == 2:  # keeps frame 1's caption (two descriptions) short
        size = 2
    named = [NAMED[i] for i in rng.choice(len(NAMED), size=size - len(newcomers), replace=False)]
    cast = named + newcomers
    order = rng.permutation(len(cast))
    slots = [SLOTS[i] for i in rng.choice(3, size=len(cast), replace=False)]
    actors = [Actor(cast[i], slot, _pick(rng, ACTIONS)) for i, slot in zip(order, slots)]
    for actor in actors:
        if rng.random() < 0.2:
            actor.holding = _pick(rng, OBJECTS)
    actors.sort(key=lambda actor: SLOTS.index(actor.slot))

    caption = _Caption()
    if newcomers:
        template = int(rng.integers(2))
    else:
        template = int(rng.integers(3))
    phrase = SETTING_PHRASES[setting]
    if template == 0:
        intro = _pick(rng, (phrase, "one day " + phrase))
        sentence = _Caption()
        _action_clauses(rng, sentence, actors)
        caption.add(intro + ", ", *sentence.sentences[0])
    elif template == 1:
        _action_clauses(rng, caption, actors, " " + phrase)
    else:
        caption.add(tuple(actors), (" is " if len(actors) == 1 else " are ") + phrase)
        _action_clauses(rng, caption, actors)
    for newcomer in newcomers:
        actor = next(actor for actor in actors if actor.character is newcomer)
        caption.add((actor,), " is " + newcomer.describe())
    frames = [_snapshot(setting, variant, actors, caption, "start")]

    for _ in range(length - 1):
        event = _choose_event(rng, actors)
        caption = _Caption()
        said_setting = False
        if event == "act":
            for actor in actors:
                if rng.random() < 0.6 or len(actors) == 1:
                    actor.action = _pick(rng, [a for a in ACTIONS if a != actor.action])
            rest = actors
        elif event == "arrive":
            present = {actor.character.name for actor in actors}
            candidates = [character for character in NAMED if character.name not in present]
            free = [slot for slot in SLOTS if slot not in {actor.slot for actor in actors}]
            newcomer = Actor(_pick(rng, candidates), _pick(rng, free), _pick(rng, ACTIONS))
            actors = sorted([*actors, newcomer], key=lambda actor: SLOTS.index(actor.slot))
            caption.add(*_template(rng, ARRIVE, (newcomer,), SIMPLE_ACTION[newcomer.action]))
            rest = [actor for actor in actors if actor is not newcomer]
        elif event == "leave":
            leaving = _pick(rng, [actor for actor in actors if actor.character.kind == "named"])
            actors = [actor for actor in actors if actor is not leaving]
            caption.add(*_template(rng, LEAVE, (leaving,)))
            rest = actors
        elif event == "go":
            setting = _pick(rng, [s for s in SETTINGS if s != setting])
            variant = int(rng.integers(BACKGROUND_VARIANTS))
            for actor in actors:
                if rng.random() < 0.5:
                    actor.action = _pick(rng, ACTIONS)
            templates = GO if len(actors) > 1 else GO_ONE
            caption.add(*_template(rng, templates, tuple(actors), SETTING_PLACES[setting]))
            rest, said_setting = actors, True
        elif event == "pick":
            actor = _pick(rng, [actor for actor in actors if actor.holding is None])
            actor.holding = _pick(rng, OBJECTS)
            actor.action = _pick(rng, ACTIONS)
            caption.add(*_template(rng, PICK, (actor,), article(actor.holding), SIMPLE_ACTION[actor.action]))
            rest = [other for other in actors if other is not actor]
        else:  # drop
            actor = _pick(rng, [actor for actor in actors if actor.holding is not None])
            dropped, actor.holding = actor.holding, None
            actor.action = _pick(rng, ACTIONS)
            caption.add(*_template(rng, DROP, (actor,), dropped, SIMPLE_ACTION[actor.action]))
            rest = [other for other in actors if other is not actor]
        tail = " " + SETTING_PHRASES[setting] if not said_setting and rng.random() < 0.4 else ""
        _action_clauses(rng, caption, rest, tail)
        frames.append(_snapshot(setting, variant, actors, caption, event))
    return frames


def _template(rng, templates, subject: tuple, *words) -> list:
    """Splits "{} verb {} ..." into parts with the subject kept as a tuple (so that it can become a pronoun)."""
    text = _pick(rng, templates)
    head, rest = text.split("{}", 1)
    return [head, subject, rest.format(*words)]


def _choose_event(rng, actors: list[Actor]) -> str:
    named = [actor for actor in actors if actor.character.kind == "named"]
    allowed = {
        "act": True,
        "arrive": len(actors) < 3,
        "leave": len(actors) >= 2 and bool(named),
        "go": True,
        "pick": any(actor.holding is None for actor in actors),
        "drop": any(actor.holding is not None for actor in actors),
    }
    names = [name for name, ok in allowed.items() if ok]
    weights = np.array([EVENT_WEIGHTS[name] for name in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _snapshot(setting, variant, actors, caption, event) -> dict:
    return {
        "setting": setting,
        "variant": variant,
        "event": event,
        "actors": [Actor(a.character, a.slot, a.action, a.holding) for a in actors],
        "caption": caption,
    }


def _pronoun_captions(frames: list[dict]) -> list[str]:
    """Captions where a subject mentioned in the previous caption becomes he / she / they when unambiguous."""
    out = []
    previous: set[str] = set()
    previous_actors: list[Actor] = []
    for index, frame in enumerate(frames):
        caption = frame["caption"]
        nearby = {a.character.name: a.character.gender for a in frame["actors"] + previous_actors}
        present = {a.character.name for a in frame["actors"]}

        def pronoun_ok(subject: tuple, index=index, previous=previous, nearby=nearby, present=present):
            if index == 0 or not all(a.character.name in previous for a in subject):
                return None
            if len(subject) == 1:
                gender = subject[0].character.gender
                same = [name for name, g in nearby.items() if g == gender]
                return gender if same == [subject[0].character.name] else None
            return "they" if {a.character.name for a in subject} == present else None

        out.append(caption.render(pronoun_ok))
        previous = caption.subjects()
        previous_actors = frame["actors"]
    return out


def story_record(
    seed: int, split: str, index: int, size: int = 64, length: int = 5, guest_share: float = GUEST_PROBABILITY
) -> dict:
    """One story record of the shared data API (frames, captions, captions_pronoun, labels, annotation)."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    frames = plan_story(rng, unseen=split == "test_unseen", length=length, guest_share=guest_share)
    images = np.stack([
        draw_frame(size, f["setting"], f["variant"], [actor.state() for actor in f["actors"]]) for f in frames
    ])  # fmt: skip
    labels = {"characters": np.zeros((length, len(NAMED)), np.uint8), "setting": np.zeros(length, np.int64)}
    for slot in SLOTS:
        for attribute in ("body", "colour", "accessory"):
            labels[f"{slot}.{attribute}"] = np.zeros(length, np.int64)
    attributes = {"body": list(BODIES), "colour": list(COLOURS), "accessory": list(ACCESSORIES)}
    annotation = []
    for j, frame in enumerate(frames):
        labels["setting"][j] = SETTINGS.index(frame["setting"])
        for actor in frame["actors"]:
            if actor.character.kind == "named":
                labels["characters"][j, NAMED_NAMES.index(actor.character.name)] = 1
            for attribute, classes in attributes.items():
                value = getattr(actor.character, attribute)
                labels[f"{actor.slot}.{attribute}"][j] = 1 + classes.index(value)
        annotation.append({
            "setting": frame["setting"],
            "background_variant": frame["variant"],
            "event": frame["event"],
            "characters": [actor.state() for actor in frame["actors"]],
        })  # fmt: skip
    return {
        "frames": images,
        "captions": [frame["caption"].render() for frame in frames],
        "captions_pronoun": _pronoun_captions(frames),
        "labels": labels,
        "annotation": annotation,
        "story_id": f"{split}-{index:06d}",
    }
