"""Self-describing weights: `config.json` + `model.safetensors`, loaded strictly.

A weights folder holds
    config.json         {"format_version": 1, "model_type": "<registered name>", "config": {...}}
    model.safetensors   the state dict
and is written atomically. `from_pretrained` rebuilds the model from its config and names every missing,
unexpected or mis-shaped key. Legacy `.ckpt` / `.pt` files are only read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from storyviz.config import Config, ConfigError
from storyviz.files import atomic_dir, write_text_atomic

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class WeightsError(ValueError):
    """A weights folder or checkpoint that cannot be loaded as asked; the message names the file and keys."""


def describe_mismatch(
    model_state: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], source: str, limit: int = 20
) -> str | None:
    """Returns a message naming missing, unexpected and mis-shaped keys, or None when the two match."""
    missing = sorted(set(model_state) - set(loaded))
    unexpected = sorted(set(loaded) - set(model_state))
    shapes = sorted(
        f"{key}: expected {tuple(model_state[key].shape)}, found {tuple(loaded[key].shape)}"
        for key in set(model_state) & set(loaded)
        if model_state[key].shape != loaded[key].shape
    )

    def listing(title: str, items: list[str]) -> str:
        more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more

    if not (missing or unexpected or shapes):
        return None
    message = f"{source}: weights do not match the model"
    if missing:
        message += listing("missing keys", missing)
    if unexpected:
        message += listing("unexpected keys", unexpected)
    if shapes:
        message += listing("mis-shaped keys", shapes)
    return message


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads `state` into `module`, raising WeightsError that names every mismatching key. Values are copied into
    the module's own tensors, so float16 files load into a float32 module (and the reverse) without a cast."""
    problem = describe_mismatch(module.state_dict(), state, source)
    if problem:
        raise WeightsError(problem)
    module.load_state_dict(state, strict=True)


def load_legacy_checkpoint(path: str | Path) -> Any:
    """Reads a `.ckpt` / `.pt` pickle safely (`weights_only=True`: tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe pickles
        raise WeightsError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(error).__name__}: {error})"
        ) from None


def read_weights_config(directory: str | Path) -> dict[str, Any]:
    """Reads and checks `config.json` of a weights folder; returns the parsed JSON."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(f"{directory}: model folder not found")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise WeightsError(f"{path}: missing; a storyviz model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise WeightsError(f"{path}: not valid JSON ({error})") from None
    for field in ("format_version", "model_type", "config"):
        if field not in data:
            raise WeightsError(f"{path}: field {field!r} missing; is this a storyviz model folder?")
    if data["format_version"] != FORMAT_VERSION:
        raise WeightsError(
            f"{path}: format_version {data['format_version']!r}, but this storyviz reads version {FORMAT_VERSION}"
        )
    return data


def update_weights_config(directory: str | Path, fields: dict[str, Any]) -> None:
    """Adds or replaces top-level fields of a model folder's config.json (atomically); the weights are untouched."""
    reserved = {"format_version", "model_type", "config"} & set(fields)
    if reserved:
        raise WeightsError(f"update_weights_config: {sorted(reserved)} cannot be changed this way")
    data = read_weights_config(directory)
    data.update(fields)
    write_text_atomic(Path(directory) / CONFIG_NAME, json.dumps(data, indent=2, sort_keys=True))


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None


class Pretrained:
    """Mixin for `torch.nn.Module`s built as `Model(config)`: adds save_pretrained / from_pretrained.

    Subclasses set `model_type` (the name written to config.json) and `config_class`.
    """

    model_type: ClassVar[str]
    config_class: ClassVar[type[Config]]
    config: Config

    def save_pretrained(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Writes config.json + model.safetensors atomically; `extra` adds fields to config.json."""
        directory = Path(directory)
        state = {key: tensor.detach().contiguous().cpu() for key, tensor in self.state_dict().items()}
        with atomic_dir(directory) as tmp:
            payload = {"format_version": FORMAT_VERSION, "model_type": self.model_type}
            payload["config"] = self.config.to_dict()
            payload.update(extra or {})
            (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True))
            save_file(_untie(state), str(tmp / WEIGHTS_NAME), metadata={"format_version": str(FORMAT_VERSION)})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Self:
        """Rebuilds the model from config.json and loads model.safetensors strictly."""
        directory = Path(directory)
        data = read_weights_config(directory)
        if data["model_type"] != cls.model_type:
            raise WeightsError(
                f"{directory / CONFIG_NAME}: model_type is {data['model_type']!r}, expected {cls.model_type!r}"
            )
        try:
            config = cls.config_class.from_dict(data["config"], where=str(directory / CONFIG_NAME))
        except ConfigError as error:
            raise WeightsError(str(error)) from None
        model = cls(config)
        load_state_dict_strict(model, read_safetensors(directory / WEIGHTS_NAME), str(directory / WEIGHTS_NAME))
        return model.to(map_location)


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; tied weights are saved as separate copies."""
    seen: dict[int, str] = {}
    out = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone() if pointer in seen and tensor.numel() else tensor
        seen.setdefault(pointer, key)
    return out
