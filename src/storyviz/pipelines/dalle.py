"""DALL-E generation: every caption becomes one image on its own (a single-image model, no story context).

The model folder is a DALL-E bundle (storyviz.convert.bundle, model_type "dalle-bundle": transformer, text
tokenizer, image tokenizer), as written by `storyviz train dalle` or `storyviz import mindalle`.
`load_pipeline(folder)` returns a `DallePipeline`.

All captions of all requests are sampled together in one batch by storyviz.sampling.Engine (KV cache), then
decoded by the image tokenizer. SamplingOptions map to SamplingConfig: top_k (0 = off, 1 = greedy), top_p,
temperature, guidance (classifier-free guidance against the all-[PAD] caption; 1 = off), candidates and seed
(the same seed and requests give the same images). With several candidates, a frame scorer
(storyviz.pipelines.rerank: the bundle's "scorer" part, or one given with `use_scorer`) scores every decoded
candidate against its caption and the best is kept; without one the first candidate is kept. Every candidate's
codes are recorded in `info["candidates"]` (and their scores, best first, in `info["scores"]`). Captions longer
than the model's text length are truncated with a warning that names them (`info["truncated"]`).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from storyviz.convert.bundle import DALLE_BUNDLE, DalleBundle, read_bundle_config
from storyviz.image_tokenizers.vqgan import decode_each
from storyviz.models.inference import is_quantized, quantize_int8_
from storyviz.pipelines.base import ProgressFn, SamplingOptions, StoryPipeline, StoryRequest, StoryResult
from storyviz.pipelines.rerank import FrameScorer, Reranker, best_candidates
from storyviz.sampling import Engine, SamplingConfig
from storyviz.weights import WeightsError


class GenerationError(ValueError):
    """A request this pipeline cannot generate (the message says why)."""


class DallePipeline(StoryPipeline):
    model_type = DALLE_BUNDLE
    supports_continuation = False
    max_frames = 16  # frames are independent; this only bounds one request's batch

    def __init__(self, bundle: DalleBundle, device: str = "cpu", scorer: FrameScorer | None = None):
        if bundle.image_tokenizer is None or isinstance(bundle.image_tokenizer, str | Path):
            raise WeightsError("a DALL-E bundle without an image tokenizer cannot draw images")
        self.device = torch.device(device)
        self.transformer = bundle.transformer.to(self.device).eval()
        self.tokenizer = bundle.tokenizer
        self.image_tokenizer = bundle.image_tokenizer.to(self.device).eval()
        self.scorer = scorer
        config = self.transformer.config
        side = math.isqrt(config.image_len)
        if side * side != config.image_len:
            raise WeightsError(f"transformer image_len {config.image_len} is not a square grid of codes")
        self.grid = (side, side)
        self.image_size = side * self.image_tokenizer.downsample_factor
        self.text_length = config.text_len
        if self.tokenizer.length != config.text_len:
            raise WeightsError(
                f"the text tokenizer pads to {self.tokenizer.length} tokens but the transformer reads {config.text_len}"
            )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str = "cpu", scorer: FrameScorer | None = None
    ) -> DallePipeline:
        """The bundle's pipeline; its "scorer" part, if any, re-ranks candidates unless `scorer` is given."""
        return cls(
            DalleBundle.from_pretrained(directory), device=device, scorer=scorer or bundled_scorer(directory, device)
        )

    def use_scorer(self, scorer: FrameScorer) -> None:
        self.scorer = scorer

    def sampling_config(self, options: SamplingOptions) -> SamplingConfig:
        return SamplingConfig(
            temperature=options.temperature,
            top_k=options.top_k,
            top_p=options.top_p,
            guidance_scale=options.guidance,
            guidance_start=options.guidance_start,
            source_guidance=options.source_guidance,
            candidates=options.candidates,
            seed=options.seed,
        )

    def check(self, requests: list[StoryRequest]) -> None:
        for index, request in enumerate(requests):
            if request.source_frame is not None:
                raise GenerationError(
                    f"request {index}: this DALL-E model draws each caption on its own and cannot continue a story "
                    "from a source frame; leave the source frame out or use a StoryDALL-E or ARLDM model"
                )
            if not request.captions:
                raise GenerationError(f"request {index}: no captions")
            if len(request.captions) > self.max_frames:
                raise GenerationError(
                    f"request {index}: {len(request.captions)} captions; this model generates at most "
                    f"{self.max_frames} frames per request"
                )

    def generate(
        self, requests: list[StoryRequest], options: SamplingOptions, progress: ProgressFn | None = None
    ) -> list[StoryResult]:
        """Samples every caption of every request in one batch; progress(tokens done, image_len) per token step."""
        self.check(requests)
        config = self.sampling_config(options)
        captions = [caption for request in requests for caption in request.captions]
        encoded = self.tokenizer.encode(captions)
        truncated = [captions[index] for index in encoded.truncated]
        for caption in dict.fromkeys(truncated):
            warnings.warn(
                f"caption longer than the model's {self.text_length} text tokens, truncated: {caption!r}", stacklevel=2
            )
        with torch.inference_mode():
            return self._generate(requests, config, encoded.ids, truncated, progress)

    def _generate(
        self,
        requests: list[StoryRequest],
        config: SamplingConfig,
        text: torch.Tensor,
        truncated: list[str],
        progress: ProgressFn | None,
    ) -> list[StoryResult]:
        """text (B, T) int64 for all B captions of `requests`, in order -> one StoryResult per request."""
        start = time.perf_counter()
        engine = Engine(self.transformer)
        total = self.transformer.config.image_len
        tokens = None
        for step, partial in engine.stream(text.to(self.device), config):
            tokens = partial  # (B, C, step+1); the last one holds every token
            if progress is not None:
                progress(step + 1, total)
        scores = None
        if self.scorer is not None and config.candidates > 1:
            captions = [caption for request in requests for caption in request.captions]
            earlier = [request.captions[:index] for request in requests for index in range(len(request.captions))]
            tokens, scores = rerank(self.scorer, captions, tokens, self.image_tokenizer, self.grid, earlier)
        sampled = time.perf_counter()
        best = tokens[:, 0]
        images = self.image_tokenizer.decode(best.reshape(-1, *self.grid))
        frames = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        timing = {
            "sampling_seconds": round(sampled - start, 3),
            "decoding_seconds": round(time.perf_counter() - sampled, 3),
        }
        results, first = [], 0
        for request in requests:
            count = len(request.captions)
            rows = slice(first, first + count)
            info = {"truncated": [caption for caption in request.captions if caption in truncated], **timing}
            if config.candidates > 1:
                info["candidates"] = tokens[rows].tolist()
                if scores is not None:
                    info["scores"] = scores[rows].tolist()
            results.append(
                StoryResult(
                    frames=[np.ascontiguousarray(frame) for frame in frames[rows]],
                    captions=list(request.captions),
                    codes=best[rows].tolist(),
                    info=info,
                )
            )
            first += count
        return results

    def describe(self) -> dict:
        info = {**super().describe(), "text_length": self.text_length, "grid": list(self.grid)}
        info |= {"scorer": describe_scorer(self.scorer)} if self.scorer is not None else {}
        return info | ({"weights": "int8"} if is_quantized(self.transformer) else {})

    def quantize_int8(self) -> None:
        quantize_int8_(self.transformer)  # refuses a model that is not on the CPU


def bundled_scorer(directory: str | Path, device: str = "cpu") -> Reranker | None:
    """The re-ranking scorer of a token model's bundle (its "scorer" part), or None."""
    parts = read_bundle_config(directory)["config"]["parts"]
    return Reranker.from_pretrained(Path(directory) / parts["scorer"], device) if "scorer" in parts else None


def describe_scorer(scorer: FrameScorer) -> str:
    return str(scorer.directory) if isinstance(scorer, Reranker) else type(scorer).__name__


def rerank(
    scorer: FrameScorer,
    captions: list[str],
    tokens: torch.Tensor,
    image_tokenizer,
    grid: tuple[int, int],
    earlier: list[list[str]],
    references: list[torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, C, N) of C candidates for each of B captions -> (the same sorted best first, scores (B, C) sorted
    alike); every candidate is decoded (with its caption's reference frame (3, H, W) or None, for a decoder that
    reads one: `decode_each`) and scored against its caption (and its story's `earlier` captions)."""
    batch, count = tokens.shape[:2]
    references = [None] * batch if references is None else references
    images = decode_each(image_tokenizer, tokens.reshape(-1, *grid), [r for r in references for _ in range(count)])
    images = images.clamp(-1, 1)
    scores = scorer(captions, images.view(batch, count, *images.shape[1:]), earlier=earlier)
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.shape != (batch, count):
        raise ValueError(f"the scorer returned scores of shape {tuple(scores.shape)}, expected {(batch, count)}")
    order = best_candidates(scores.cpu()).to(tokens.device)
    return tokens.gather(1, order[:, :, None].expand_as(tokens)), scores.gather(1, order.to(scores.device))
