import json

import pytest
import torch

from storyviz.models.toy import PRESETS, ToyModel
from storyviz.registry import load_model, resolve_model_dir
from storyviz.weights import WeightsError, load_legacy_checkpoint


class Unsafe:
    """Any non-tensor class: a weights-only load must refuse to build it."""


def make_model(seed=0):
    torch.manual_seed(seed)
    return ToyModel(PRESETS["tiny"])


def test_save_load_round_trip_is_exact(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["format_version"] == 1
    loaded = ToyModel.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(images), loaded(images))
    assert isinstance(load_model(tmp_path / "m"), ToyModel)


def test_mismatched_weights_name_every_key(tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    data = json.loads(config_path.read_text())
    data["config"]["hidden"] = 48
    config_path.write_text(json.dumps(data))
    with pytest.raises(
        WeightsError, match=r"mis-shaped keys.*conv\.weight: expected \(48, 3, 3, 3\), found \(32, 3, 3, 3\)"
    ):
        ToyModel.from_pretrained(tmp_path / "m")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    make_model().save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    state["extra.weight"] = state.pop("head.bias")
    save_file(state, str(weights))
    with pytest.raises(WeightsError) as info:
        ToyModel.from_pretrained(tmp_path / "m")
    assert "missing keys (1): head.bias" in str(info.value)
    assert "unexpected keys (1): extra.weight" in str(info.value)


def test_corrupted_weights_file_names_the_file(tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(WeightsError, match="model.safetensors: not a readable safetensors file"):
        ToyModel.from_pretrained(tmp_path / "m")


def test_other_format_version_and_missing_config_are_refused(tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    data = json.loads(config_path.read_text())
    data["format_version"] = 99
    config_path.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="format_version 99"):
        ToyModel.from_pretrained(tmp_path / "m")
    config_path.unlink()
    with pytest.raises(WeightsError, match="config.json: missing"):
        ToyModel.from_pretrained(tmp_path / "m")


def test_failed_save_keeps_previous_folder(tmp_path, monkeypatch):
    model = make_model()
    model.save_pretrained(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("storyviz.weights.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        make_model(seed=1).save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_hub_names_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="never downloads"):
        resolve_model_dir("kakaobrain/minDALL-E")
    with pytest.raises(WeightsError, match="not found"):
        resolve_model_dir(tmp_path / "nothing")


def test_legacy_checkpoints_are_read_weights_only(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_legacy_checkpoint(path)["state_dict"]["w"], torch.ones(2))

    torch.save({"object": Unsafe()}, tmp_path / "unsafe.pt")
    with pytest.raises(WeightsError, match="unsafe.pt: cannot be read as a weights-only"):
        load_legacy_checkpoint(tmp_path / "unsafe.pt")


def test_update_weights_config_keeps_the_weights(tmp_path):
    from storyviz.weights import update_weights_config

    make_model().save_pretrained(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    update_weights_config(tmp_path / "m", {"heldout_accuracy": {"a": 0.99}})
    assert json.loads((tmp_path / "m" / "config.json").read_text())["heldout_accuracy"] == {"a": 0.99}
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    with pytest.raises(WeightsError, match="cannot be changed"):
        update_weights_config(tmp_path / "m", {"config": {}})
