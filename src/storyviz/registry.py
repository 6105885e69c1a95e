"""Where storyviz finds its models: registered model types and the models bundled inside the package.

Model classes are listed by import path and imported only when used, so `import storyviz` stays light.
Nothing here touches the network: a name that is neither a folder nor a bundled model is refused.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from storyviz.weights import Pretrained, WeightsError, read_weights_config

# model_type (as written in config.json) -> "module:Class"
MODEL_TYPES: dict[str, str] = {
    "toy": "storyviz.models.toy:ToyModel",
    "vqgan": "storyviz.image_tokenizers.vqgan:VQGAN",
    "dvae": "storyviz.image_tokenizers.dvae:DVAE",
    "dalle": "storyviz.models.dalle:Dalle",
    "storydalle": "storyviz.models.storydalle:StoryDalle",
    "judge": "storyviz.models.judge:Judge",
    "scorer": "storyviz.models.scorer:Scorer",
    "arldm-vae": "storyviz.models.arldm_vae:ARLDMVAE",
    "arldm": "storyviz.models.arldm:ARLDM",
}

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = "sprites"


def register_model_type(model_type: str, target: str) -> None:
    """Adds a model type (for plug-ins and tests); `target` is "module:Class"."""
    MODEL_TYPES[model_type] = target


def model_class(model_type: str) -> type[Pretrained]:
    if model_type not in MODEL_TYPES:
        raise WeightsError(f"unknown model_type {model_type!r}; known: {', '.join(sorted(MODEL_TYPES))}")
    module_name, class_name = MODEL_TYPES[model_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package (folders under storyviz/assets/models)."""
    root = ASSETS / "models"
    return sorted(path.name for path in root.iterdir() if (path / "config.json").is_file()) if root.is_dir() else []


_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_dir(name_or_path: str | Path | None) -> Path:
    """Maps a bundled model name or a local folder to a folder; refuses hub names with a clear message."""
    if name_or_path is None:
        if DEFAULT_MODEL not in bundled_models():
            raise WeightsError(
                f"the bundled default model {DEFAULT_MODEL!r} is missing from {ASSETS / 'models'} (an incomplete "
                "installation?); reinstall storyviz, or pass --model with a model folder"
            )
        name_or_path = DEFAULT_MODEL
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text in bundled_models():
        return ASSETS / "models" / text
    bundled = ", ".join(bundled_models()) or "none yet"
    if _HUB_NAME.match(text) and not path.parent.exists():
        raise WeightsError(
            f"{text!r} looks like a model hub name; storyviz never downloads weights. "
            f"Pass a local model folder or a bundled model name (bundled: {bundled})."
        )
    raise WeightsError(f"model {text!r} not found: not a folder and not a bundled model (bundled: {bundled})")


def load_model(name_or_path: str | Path | None, map_location: str = "cpu") -> Any:
    """Loads any storyviz model folder (or bundled name); the class comes from config.json's model_type."""
    directory = resolve_model_dir(name_or_path)
    model_type = read_weights_config(directory)["model_type"]
    return model_class(model_type).from_pretrained(directory, map_location=map_location)
