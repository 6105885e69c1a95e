"""Re-ranking candidates: several frames are sampled per caption and the one a scorer likes best is kept.

A frame scorer is any callable (captions: B strings, images (B, C, 3, H, W) in [-1, 1], earlier: for each
caption, the captions before it in its story) -> scores (B, C), higher is better; the pipelines pass `earlier`
by keyword. `Reranker` is the trained one: a "scorer-bundle" folder (storyviz.models.scorer, written by `storyviz
train scorer`) with its caption tokenizer. The token pipelines (DALL-E, StoryDALL-E) use the "scorer" part of
their bundle when it has one, or the folder given to `load_pipeline(..., scorer=DIR)` (`--scorer`).
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

FrameScorer = Callable[..., torch.Tensor]  # (captions, images, earlier=...) -> scores


class Reranker:
    """A trained scorer bundle as a frame scorer: (captions (B), images (B, C, 3, H, W), earlier) -> scores (B, C).
    A scorer with `context` K reads each caption's K latest `earlier` captions."""

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
    def __call__(
        self, captions: list[str], images: torch.Tensor, earlier: list[list[str]] | None = None
    ) -> torch.Tensor:
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
        context = self.context(earlier, len(captions))
        return self.scorer.score(ids, flat.view(batch, candidates, *flat.shape[1:]), context)

    def context(self, earlier: list[list[str]] | None, count: int) -> torch.Tensor | None:
        """Each caption's earlier captions -> the ids the scorer reads (B, K, T), the latest first; None when the
        scorer reads no context (or none is given)."""
        back = self.scorer.config.context
        if not back or earlier is None:
            return None
        if len(earlier) != count:
            raise ValueError(f"re-ranking: {len(earlier)} lists of earlier captions for {count} captions")
        length, pad = self.tokenizer.length, self.tokenizer.pad_id
        context = torch.full((count, back, length), pad, dtype=torch.long)
        for row, captions in enumerate(earlier):
            latest = list(captions)[::-1][:back]
            if latest:
                context[row, : len(latest)] = self.tokenizer.encode(latest).ids
        return context.to(self.device)


def best_candidates(scores: torch.Tensor) -> torch.Tensor:
    """scores (B, C) -> the order of the candidates of each row, best first (B, C); ties keep sampling order."""
    return scores.argsort(dim=1, descending=True, stable=True)
