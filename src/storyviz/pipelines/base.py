"""The one generation interface that `storyviz generate`, `storyviz evaluate` and the demo use for every model.

A pipeline turns story requests (captions, and optionally a source frame) into frames. Each backend
(DALL-E single images, StoryDALL-E, ARLDM, an image tokenizer's reconstructions) implements `StoryPipeline`
and is listed in `PIPELINES` by the `model_type` written in its folder's config.json.

Tasks:
- story visualization: `source_frame is None`; every caption gets a generated frame.
- story continuation: `source_frame` (uint8 (H, W, 3)) shows the characters and setting; `captions` are the
  captions of the frames to generate, and `source_caption` (optional) describes the source frame.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from storyviz.config import Config
from storyviz.registry import resolve_model_dir
from storyviz.weights import WeightsError, read_weights_config


@dataclass(frozen=True)
class SamplingOptions(Config):
    """Sampling controls shared by all backends; each uses those that apply to it."""

    seed: int = 0
    candidates: int = 1  # samples per frame; the best by the pipeline's scorer is kept
    top_k: int = 0  # 0: no top-k filtering; 1: greedy
    top_p: float = 1.0
    temperature: float = 1.0
    guidance: float = 1.0  # classifier-free guidance scale; 1 = plain conditional
    guidance_start: int = 0  # token models: image tokens before this one are sampled without guidance
    source_guidance: float = 0.0  # story token models: the source frame's own guidance scale; 0 = `guidance`
    steps: int = 50  # diffusion sampling steps


@dataclass
class StoryRequest:
    captions: list[str]
    source_frame: np.ndarray | None = None  # uint8 (H, W, 3), any size: the pipeline resizes it
    source_caption: str | None = None


@dataclass
class StoryResult:
    frames: list[np.ndarray]  # uint8 (H, W, 3), one per caption of the request
    captions: list[str]
    codes: list[list[int]] | None = None  # image token codes per frame, for token-based models
    info: dict[str, Any] = field(default_factory=dict)


# progress callback: (frames or tokens done, total)
ProgressFn = Callable[[int, int], None]


class StoryPipeline(ABC):
    """Generates stories with one trained model; built by `from_pretrained(folder)`."""

    model_type: str
    max_frames: int  # the most frames one request may ask for
    image_size: int
    text_length: int | None = None  # caption tokens the model reads (longer captions are truncated, with a warning)
    supports_continuation: bool = True
    sampling: SamplingOptions = SamplingOptions()  # the model's sampling defaults (its config.json "sampling")
    progress_unit: str = "token"  # what the progress callback counts

    @classmethod
    @abstractmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> StoryPipeline: ...

    @abstractmethod
    def generate(
        self, requests: list[StoryRequest], options: SamplingOptions, progress: ProgressFn | None = None
    ) -> list[StoryResult]:
        """Generates every request (batched where the model allows); results in request order."""

    def describe(self) -> dict[str, Any]:
        """What story.json records about the model."""
        return {"model_type": self.model_type, "max_frames": self.max_frames, "image_size": self.image_size}

    def use_scorer(self, scorer) -> None:
        """Re-ranks candidates with `scorer` (storyviz.pipelines.rerank: captions + candidate images -> scores)."""
        raise ValueError(
            f"{self.model_type} models do not re-rank candidates; a scorer applies to the token transformers "
            f"(dalle-bundle, storydalle-bundle)"
        )

    def quantize_int8(self) -> None:
        """Switches the model to int8 weights for faster CPU sampling (token models; see models/inference.py)."""
        raise ValueError(
            f"{self.model_type} models have no int8 form; --int8 applies to the token transformers "
            f"(dalle-bundle, storydalle-bundle)"
        )


# model_type of a model folder -> "module:Class" of its pipeline
PIPELINES: dict[str, str] = {
    "arldm": "storyviz.pipelines.arldm:ARLDMPipeline",
    "dalle-bundle": "storyviz.pipelines.dalle:DallePipeline",
    "storydalle-bundle": "storyviz.pipelines.storydalle:StoryDallePipeline",
}


def load_pipeline(
    name_or_path: str | Path | None, device: str = "cpu", int8: bool = False, scorer: str | Path | None = None
) -> StoryPipeline:
    """Loads the pipeline for a model folder or bundled model name (the default model when None); `int8` switches
    a token model to int8 weights (`StoryPipeline.quantize_int8`); `scorer` (a scorer-bundle folder or bundled
    name) re-ranks a token model's candidates instead of its bundle's own scorer (`StoryPipeline.use_scorer`)."""
    directory = resolve_model_dir(name_or_path)
    info = read_weights_config(directory)
    model_type = info["model_type"]
    if model_type not in PIPELINES:
        raise WeightsError(
            f"{directory}: a {model_type!r} model cannot generate stories; "
            f"models that can: {', '.join(sorted(PIPELINES)) or 'none yet'}"
        )
    module_name, class_name = PIPELINES[model_type].split(":")
    pipeline = getattr(importlib.import_module(module_name), class_name).from_pretrained(directory, device=device)
    pipeline.sampling = model_sampling(info, directory)
    if scorer is not None:
        from storyviz.pipelines.rerank import Reranker

        pipeline.use_scorer(Reranker.from_pretrained(resolve_model_dir(scorer), device))
    if int8:
        pipeline.quantize_int8()
    return pipeline


def model_sampling(info: dict[str, Any], directory: Path) -> SamplingOptions:
    """The sampling defaults a model folder recommends: the "sampling" object of its config.json (`info`; the
    values its measured results used; options a command line or the demo gives replace them)."""
    return SamplingOptions.from_dict(info.get("sampling", {}), where=f"{directory / 'config.json'}: sampling")
