"""Re-ranking candidates: several frames are sampled per caption and the one a scorer likes best is kept.

A frame scorer is any callable (captions: B strings, images (B, C, 3, H, W) in [-1, 1]) -> scores (B, C), higher
is better. `Reranker` is the trained one: a "scorer-bundle" folder (storyviz.models.scorer, written by
`storyviz train scorer`) with its caption tokenizer. The token pipelines (DALL-E, StoryDALL-E) use the "scorer"
part of their bundle when it has one, or the folder given to `load_pipeline(..., scorer=DIR)` (`--scorer`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from storyviz.convert.bundle import read_bundle_config
from storyviz.registry import load_model
from storyviz.text import TextTokenizer
from storyviz.weights import WeightsError

SCORER_BUNDLE = "scorer-bundle"

FrameScorer = Callable[[list[str], torch.Tensor], torch.Tensor]


class Reranker:
    """A trained scorer bundle as a frame scorer: (captions (B), images (B, C, 3, H, W)) -> scores (B, C)."""

    def __init__(self, scorer: torch.nn.Module, tokenizer: TextTokenizer, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.directory: Path | None = None  # the folder it was loaded from, if any
        self.scorer = scorer.to(self.device).float().eval()
        self.tokenizer = tokenizer
        if tokenizer.length != scorer.config.text_len:
            raise WeightsError(
                f"the scorer's tokenizer pads to {tokenizer.length} tokens; the scorer reads {scorer.config.text_len}"
            )

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Reranker:
        directory = Path(directory)
        parts = read_bundle_config(directory, SCORER_BUNDLE)["config"]["parts"]
        missing = [name for name in ("scorer", "tokenizer") if name not in parts]
        if missing:
            raise WeightsError(f"{directory}: the scorer bundle lacks {missing}")
        scorer = load_model(directory / parts["scorer"])
        reranker = cls(scorer, TextTokenizer.from_pretrained(directory / parts["tokenizer"]), device)
        reranker.directory = directory
        return reranker

    @torch.inference_mode()
    def __call__(self, captions: list[str], images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 5 or images.shape[0] != len(captions):
            raise ValueError(
                f"re-ranking: expected candidate images (B, C, 3, H, W) for {len(captions)} captions, "
                f"got {tuple(images.shape)}"
            )
        batch, candidates = images.shape[:2]
        size = self.scorer.config.image_size
        flat = images.flatten(0, 1).float().to(self.device)
        if flat.shape[-1] != size or flat.shape[-2] != size:
            flat = F.interpolate(flat, size=(size, size), mode="area")
        ids = self.tokenizer.encode(captions).ids.to(self.device)
        return self.scorer.score(ids, flat.view(batch, candidates, *flat.shape[1:]))


def best_candidates(scores: torch.Tensor) -> torch.Tensor:
    """scores (B, C) -> the order of the candidates of each row, best first (B, C); ties keep sampling order."""
    return scores.argsort(dim=1, descending=True, stable=True)
