"""Bundles: a model that needs several self-describing parts (a transformer, a text tokenizer, an image
tokenizer) stored as one folder that `storyviz.pipelines.load_pipeline` reads like any model folder.

    config.json        {"format_version": 1, "model_type": "dalle-bundle", "config": {"parts": {name: folder}},
                        ...extra fields}  (readable by storyviz.weights.read_weights_config)
    transformer/       the stage-2 transformer: config.json (model_type "dalle") + model.safetensors
    tokenizer/         the text tokenizer: tokenizer.json (storyviz.text.TextTokenizer)
    image_tokenizer/   the stage-1 image tokenizer: config.json (model_type "vqgan", "dvae", ...) + model.safetensors

Each part is self-describing and loads on its own (`storyviz.registry.load_model(folder / "transformer")`,
`TextTokenizer.from_pretrained(folder / "tokenizer")`). `write_bundle` / `read_bundle_config` are shared by every
bundle kind (the StoryDALL-E bundle is model_type "storydalle-bundle" in the same shape); `DalleBundle` is the
DALL-E one. The image tokenizer of a DALL-E bundle may be absent (a transformer alone cannot draw, but can be
scored on codes), and "parts" says which are present.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from storyviz.files import atomic_dir
from storyviz.registry import load_model
from storyviz.text import TextTokenizer
from storyviz.weights import CONFIG_NAME, FORMAT_VERSION, WeightsError, read_weights_config

DALLE_BUNDLE = "dalle-bundle"
PARTS = ("transformer", "tokenizer", "image_tokenizer")


def write_bundle(
    directory: str | Path, model_type: str, parts: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Writes a bundle folder atomically. `parts` maps a part name (also its sub-folder) to an object with
    `save_pretrained(folder)` or to an existing folder (a `Path` or str), which is copied; `extra` adds fields
    to config.json (e.g. "source", "training_step")."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        for name, part in parts.items():
            if isinstance(part, str | Path):
                source = Path(part)
                if not source.is_dir():
                    raise WeightsError(f"{source}: folder of bundle part {name!r} not found")
                shutil.copytree(source, tmp / name)
            else:
                part.save_pretrained(tmp / name)
        payload = {
            "format_version": FORMAT_VERSION,
            "model_type": model_type,
            "config": {"parts": {name: name for name in parts}},
            **(extra or {}),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True))
    return directory


def read_bundle_config(directory: str | Path, model_type: str | None = None) -> dict[str, Any]:
    """Reads a bundle's config.json (checked like any model folder); with `model_type`, refuses other kinds.
    Returns the parsed JSON; `["config"]["parts"]` maps part names to sub-folders that exist."""
    directory = Path(directory)
    data = read_weights_config(directory)
    path = directory / CONFIG_NAME
    if model_type is not None and data["model_type"] != model_type:
        raise WeightsError(f"{path}: model_type is {data['model_type']!r}, expected {model_type!r}")
    parts = data["config"].get("parts") if isinstance(data["config"], dict) else None
    if not isinstance(parts, dict):
        raise WeightsError(f"{path}: config.parts missing; is this a bundle folder?")
    for name, folder in parts.items():
        if not (directory / folder).is_dir():
            raise WeightsError(f"{directory / folder}: folder of bundle part {name!r} missing")
    return data


@dataclass
class DalleBundle:
    transformer: torch.nn.Module
    tokenizer: TextTokenizer
    image_tokenizer: torch.nn.Module | str | Path | None = None  # a module, or a folder to copy when saving

    def save_pretrained(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Writes the bundle folder atomically; `extra` adds fields to config.json (e.g. "source")."""
        parts: dict[str, Any] = {"transformer": self.transformer, "tokenizer": self.tokenizer}
        if self.image_tokenizer is not None:
            parts["image_tokenizer"] = self.image_tokenizer
        return write_bundle(directory, DALLE_BUNDLE, parts, extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> DalleBundle:
        directory = Path(directory)
        parts = read_bundle_config(directory, DALLE_BUNDLE)["config"]["parts"]
        for name in ("transformer", "tokenizer"):
            if name not in parts:
                raise WeightsError(f"{directory / CONFIG_NAME}: config.parts has no {name!r}")
        image_tokenizer = None
        if "image_tokenizer" in parts:
            image_tokenizer = load_model(directory / parts["image_tokenizer"], map_location=map_location)
        return cls(
            transformer=load_model(directory / parts["transformer"], map_location=map_location),
            tokenizer=TextTokenizer.from_pretrained(directory / parts["tokenizer"]),
            image_tokenizer=image_tokenizer,
        )


def is_bundle(directory: str | Path, model_type: str = DALLE_BUNDLE) -> bool:
    """True when `directory` holds a config.json of that bundle model_type."""
    path = Path(directory) / CONFIG_NAME
    try:
        return path.is_file() and json.loads(path.read_text()).get("model_type") == model_type
    except (OSError, json.JSONDecodeError):
        return False
