"""The sprites world and the digits set: determinism, split disjointness, ground truth that matches the
pixels, story coherence, and the `storyviz data build / inspect` commands."""

import hashlib
import json
import re

import numpy as np
import pytest

from storyviz.cli.main import main
from storyviz.data import open_dataset
from storyviz.data.build import build
from storyviz.data.sprites.draw import background, slot_box, sprite
from storyviz.data.sprites.stories import SETTING_PLACES, story_record
from storyviz.data.sprites.world import ACTIONS, COLOURS, NAMED_NAMES, SETTINGS, SLOTS, UNSEEN, guest_looks

UNSEEN_NAMES = {character.name for character in UNSEEN}
UNSEEN_LOOKS = {character.look for character in UNSEEN}


@pytest.fixture(scope="module")
def sprites(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sprites") / "set"
    build("sprites", folder, 30, size=64, seed=3)
    return open_dataset(folder)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, sprites):
    build("sprites", tmp_path / "again", 30, size=64, seed=3)
    build("sprites", tmp_path / "other", 30, size=64, seed=4)
    for split in ("train", "val", "test", "test_unseen"):
        assert digest(tmp_path / "again" / f"{split}.h5") == digest(sprites.path / f"{split}.h5")
        assert digest(tmp_path / "other" / f"{split}.h5") != digest(sprites.path / f"{split}.h5")
    assert (tmp_path / "again" / "meta.json").read_text() == (sprites.path / "meta.json").read_text()


def test_meta_and_splits(sprites):
    meta = sprites.meta
    assert meta["splits"] == {"train": 30, "val": 20, "test": 20, "test_unseen": 20}
    assert meta["kind"] == "stories" and meta["frames_per_story"] == 5 and meta["image_size"] == 64
    assert meta["labels"]["characters"]["classes"] == list(NAMED_NAMES)
    assert len(meta["world"]["characters"]) >= 9 and len(meta["world"]["unseen_characters"]) >= 6
    assert len(meta["settings"]) >= 6 and meta["seed"] == 3


def test_unseen_characters_never_leak_into_other_splits(sprites):
    for split in ("train", "val", "test"):
        for story in sprites.split(split):
            words = set(re.findall(r"[A-Za-z]+", " ".join(story["captions"] + story["captions_pronoun"])))
            assert not words & UNSEEN_NAMES
            for frame in story["annotation"]:
                for character in frame["characters"]:
                    assert character["name"] not in UNSEEN_NAMES
                    assert (character["body"], character["colour"], character["accessory"]) not in UNSEEN_LOOKS
    assert not UNSEEN_LOOKS & set(guest_looks())
    for story in sprites.split("test_unseen"):
        first = {character["name"] for character in story["annotation"][0]["characters"]}
        assert first & UNSEEN_NAMES  # the source frame shows the unseen character


def test_ground_truth_matches_pixels(sprites):
    stories = sprites.split("train")
    for index in range(10):
        story = stories[index]
        for frame, note in zip(story["frames"], story["annotation"]):
            plain = background(64, note["setting"], note["background_variant"])
            occupied = {character["slot"]: character for character in note["characters"]}
            for slot in SLOTS:
                x0, y0, x1, y1 = slot_box(64, slot)
                region, empty = frame[y0:y1, x0:x1].astype(int), plain[y0:y1, x0:x1].astype(int)
                if slot not in occupied:
                    np.testing.assert_array_equal(region, empty)  # an empty slot has no character pixels
                    continue
                drawn = np.abs(region - empty).max(-1) > 24
                counts = {name: (drawn & (np.abs(region - np.array(rgb)).max(-1) < 24)).sum()
                          for name, rgb in COLOURS.items()}  # fmt: skip
                colour = occupied[slot]["colour"]
                others = max(count for name, count in counts.items() if name != colour)
                assert counts[colour] >= 25 and counts[colour] > 1.3 * others, (index, slot, colour, counts)
            top = min(slot_box(64, slot)[1] for slot in SLOTS)
            np.testing.assert_array_equal(frame[:top], plain[:top])  # the annotated setting is what is drawn


def test_labels_match_annotation(sprites):
    heads = sprites.meta["labels"]
    for story in sprites.split("test_unseen"):
        for j, note in enumerate(story["annotation"]):
            named = {c["name"] for c in note["characters"] if c["kind"] == "named"}
            assert {NAMED_NAMES[i] for i in np.flatnonzero(story["labels"]["characters"][j])} == named
            assert heads["setting"]["classes"][story["labels"]["setting"][j]] == note["setting"]
            by_slot = {c["slot"]: c for c in note["characters"]}
            for slot in SLOTS:
                for attribute in ("body", "colour", "accessory"):
                    value = heads[f"{slot}.{attribute}"]["classes"][story["labels"][f"{slot}.{attribute}"][j]]
                    assert value == (by_slot[slot][attribute] if slot in by_slot else "none")


def test_actions_and_looks_change_the_drawing():
    base = sprite(64, "round", "red", "hat", "standing", None)
    for action in ACTIONS[1:]:
        assert np.abs(sprite(64, "round", "red", "hat", action, None) - base).max() > 50
    assert np.abs(sprite(64, "round", "red", "crown", "standing", None) - base).max() > 50
    assert np.abs(sprite(64, "round", "red", "hat", "standing", "ball") - base).max() > 50
    for a in SETTINGS:
        for b in SETTINGS:
            if a < b:
                assert np.abs(background(32, a, 0).astype(int) - background(32, b, 0)).mean() > 15


@pytest.mark.parametrize("split", ["train", "test_unseen"])
def test_stories_are_coherent(split):
    for index in range(60):
        story = story_record(11, split, index, size=32)
        notes, captions = story["annotation"], story["captions"]
        for j, (note, caption) in enumerate(zip(notes, captions)):
            names = [c["name"] for c in note["characters"]]
            assert 1 <= len(names) <= 3 and len({c["slot"] for c in note["characters"]}) == len(names)
            for name in names:
                assert re.search(rf"\b{name}\b", caption), (caption, name)  # every character is named
            if j == 0:
                for c in note["characters"]:
                    if c["kind"] != "named":  # guests / unseen: their look is described in frame 1
                        assert c["colour"] in caption
                continue
            before = {c["name"]: c for c in notes[j - 1]["characters"]}
            now = {c["name"]: c for c in note["characters"]}
            arrived, left = set(now) - set(before), set(before) - set(now)
            event = note["event"]
            assert arrived == set() or (event == "arrive" and len(arrived) == 1)
            assert left == set() or (event == "leave" and len(left) == 1)
            for name in left:
                assert re.search(rf"\b{name}\b", caption) and before[name]["kind"] == "named"
            for name in set(now) & set(before):
                assert now[name]["slot"] == before[name]["slot"]
            if note["setting"] != notes[j - 1]["setting"]:
                assert event == "go" and SETTING_PLACES[note["setting"]] in caption
            else:
                assert event != "go"


def test_pronoun_captions():
    changed = 0
    for index in range(40):
        story = story_record(5, "train", index, size=32)
        plain, pronoun = story["captions"], story["captions_pronoun"]
        assert plain[0] == pronoun[0]
        for a, b in zip(plain, pronoun):
            words = re.findall(r"[A-Za-z]+", b)
            changed += a != b
            if a != b:
                assert {"He", "he", "She", "she", "They", "they"} & set(words)
    assert changed > 20


def test_digits_labels_match_pixels(tmp_path):
    summary = build("digits", tmp_path / "digits", 20, size=32, seed=0)
    assert summary["splits"] == {"train": 20, "val": 20, "test": 20}
    data = open_dataset(tmp_path / "digits")
    from storyviz.data.digits import DIGIT_COLOURS

    heads = data.meta["labels"]
    assert len(heads["colour"]["classes"]) >= 8 and len(data.meta["world"]["textures"]) >= 8
    for item in data.split("train").frames():
        colour = heads["colour"]["classes"][item["labels"]["colour"]]
        digit = heads["digit"]["classes"][item["labels"]["digit"]]
        background_name = heads["background"]["classes"][item["labels"]["background"]]
        kind = "texture" if background_name in data.meta["world"]["textures"] else "solid"
        assert item["caption"] == f"generate image of {digit} in {colour} and a {kind} background of {background_name}"
        counts = {name: (np.abs(item["image"].astype(int) - np.array(rgb)).max(-1) < 12).sum()
                  for name, rgb in DIGIT_COLOURS.items()}  # fmt: skip
        assert counts[colour] >= 20 and counts[colour] == max(counts.values())  # the digit is drawn in its colour


def test_cli_build_and_inspect(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--quiet", "data", "build", "sprites", "--out", str(out), "--stories", "20", "--size", "32"]) == 0
    assert "built sprites" in capsys.readouterr().out
    sheet = tmp_path / "sheet.png"
    assert main(["--quiet", "data", "inspect", str(out), "--json", "--sheet", str(sheet), "--stories", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"] == {"stories": 20, "frames_per_story": 5}
    assert set(summary["splits"]) == {"train", "val", "test", "test_unseen"}
    assert summary["characters"] == list(NAMED_NAMES) and summary["settings"] == list(SETTINGS)
    assert sheet.read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "build", "sprites", "--out", str(tmp_path / "bad"), "--size", "16"]) == 2
    assert "32..256" in capsys.readouterr().err
    assert main(["data", "inspect", str(tmp_path / "nothing")]) == 2
    assert main(["data", "tokenize", "--tokenizer", "t", "--data", "d", "--out", "o"]) == 2  # no tokenizer folder 't'


def has_guest(story) -> bool:
    return any(character["kind"] == "guest" for character in story["annotation"][0]["characters"])


def test_guest_share_sets_how_many_stories_have_a_guest(tmp_path, capsys):
    for share in (0.0, 1.0):
        build("sprites", tmp_path / str(share), 20, size=32, seed=5, guest_share=share)
    every, none = open_dataset(tmp_path / "1.0"), open_dataset(tmp_path / "0.0")
    assert every.meta["guest_share"] == 1.0 and none.meta["guest_share"] == 0.0
    for split in ("train", "val", "test"):
        assert all(has_guest(story) for story in every.split(split))
        assert not any(has_guest(story) for story in none.split(split))
    for split in ("train", "test"):  # a guest's look is described in frame 1 and kept to the end
        for story in every.split(split):
            guest = next(c for c in story["annotation"][0]["characters"] if c["kind"] == "guest")
            assert f"{guest['name']} is {guest['colour']} and" in story["captions"][0]
            look = lambda c: (c["name"], c["body"], c["colour"], c["accessory"], c["slot"])  # noqa: E731
            for frame in story["annotation"]:
                assert look(guest) in {look(c) for c in frame["characters"]}
    assert digest(tmp_path / "1.0" / "test_unseen.h5") == digest(tmp_path / "0.0" / "test_unseen.h5")
    assert main(["data", "build", "sprites", "--out", str(tmp_path / "bad"), "--guest-share", "1.5"]) == 2
    assert "guest share 1.5" in capsys.readouterr().err
    assert main(["data", "build", "digits", "--out", str(tmp_path / "bad"), "--guest-share", "0.5"]) == 2
    assert "only the sprites world" in capsys.readouterr().err
