"""StoryDALL-E generation: story continuation (a source frame given) and story visualization (captions only).

The model folder is a "storydalle-bundle" (transformer/ = StoryDalle, tokenizer/, image_tokenizer/), as written by
`storyviz train storydalle` or `storyviz import storydalle`.

- Continuation: the source frame is resized and centre-cropped to the model's size and encoded to codes; the
  story encoder reads [source caption (or "") | captions]; every target frame is sampled in one batch, each from
  its caption, its story token and the source frame (frames do not see each other, as in the paper).
- Visualization: frame 1 is generated from its caption and story token without a source, then used as the source
  of the other frames.
An image tokenizer whose decoder reads a reference frame (a VQGAN with `reference_resolutions`) decodes every
frame after the source with the source frame as its reference: the given frame, or frame 1 as decoded.
With several candidates per frame, a frame scorer (the bundle's "scorer" part, or `use_scorer`) keeps the one
that shows its caption best, read after the story's earlier captions (storyviz.pipelines.rerank); without one,
the first.
Requests are batched: all first frames of visualization requests together, then every other frame together.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from storyviz.convert.bundle import read_bundle_config
from storyviz.data.formats.common import square_resize
from storyviz.image_tokenizers.vqgan import decode_each
from storyviz.pipelines.base import ProgressFn, SamplingOptions, StoryRequest, StoryResult
from storyviz.pipelines.dalle import DallePipeline, GenerationError, bundled_scorer, rerank
from storyviz.registry import load_model
from storyviz.sampling import Engine, SamplingConfig
from storyviz.text import TextTokenizer
from storyviz.weights import WeightsError

STORYDALLE_BUNDLE = "storydalle-bundle"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class StoryDallePipeline(DallePipeline):
    """Shares DallePipeline's option mapping (`sampling_config`) and `describe`; everything else is its own."""

    model_type = STORYDALLE_BUNDLE
    supports_continuation = True

    def __init__(self, transformer, tokenizer: TextTokenizer, image_tokenizer, device: str = "cpu", scorer=None):
        self.device = torch.device(device)
        self.model = transformer.to(self.device).eval()
        self.transformer = self.model.dalle
        self.tokenizer = tokenizer
        self.image_tokenizer = image_tokenizer.to(self.device).eval()
        self.reads_reference = bool(getattr(self.image_tokenizer, "reads_reference", False))
        self.scorer = scorer
        config = self.model.config
        side = int(round(config.dalle.image_len**0.5))
        if side * side != config.dalle.image_len:
            raise WeightsError(f"transformer image_len {config.dalle.image_len} is not a square grid of codes")
        self.grid = (side, side)
        self.image_size = side * self.image_tokenizer.downsample_factor
        self.text_length = config.dalle.text_len
        self.max_frames = config.story.max_frames if config.story_encoder else 64
        self._minilm = None

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> StoryDallePipeline:
        directory = Path(directory)
        parts = read_bundle_config(directory, STORYDALLE_BUNDLE)["config"]["parts"]
        missing = [name for name in ("transformer", "tokenizer", "image_tokenizer") if name not in parts]
        if missing:
            raise WeightsError(f"{directory}: the StoryDALL-E bundle lacks {missing}")
        return cls(
            load_model(directory / parts["transformer"]),
            TextTokenizer.from_pretrained(directory / parts["tokenizer"]),
            load_model(directory / parts["image_tokenizer"]),
            device=device,
            scorer=bundled_scorer(directory, device),
        )

    # --- inputs -----------------------------------------------------------------------------------------------

    def check(self, requests: list[StoryRequest]) -> None:
        for index, request in enumerate(requests):
            if not request.captions:
                raise GenerationError(f"request {index}: no captions")
            frames = len(request.captions) + (request.source_frame is not None)
            if frames > self.max_frames:
                raise GenerationError(
                    f"request {index}: {frames} frames (source frame included); this model takes at most "
                    f"{self.max_frames}"
                )

    def source_images(self, frames: list[np.ndarray]) -> torch.Tensor:
        """Source frames uint8 (H, W, 3), any size -> images (B, 3, S, S) in [-1, 1] at the model's size."""
        fitted = np.stack([square_resize(np.asarray(frame), self.image_size) for frame in frames])
        return torch.from_numpy(fitted).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(self.device)

    def decode(self, codes: torch.Tensor, references: list[torch.Tensor | None]) -> torch.Tensor:
        """codes (R, N) -> images (R, 3, S, S), each row decoded with its reference frame (3, S, S) or None."""
        return decode_each(self.image_tokenizer, codes.reshape(-1, *self.grid), references)

    def sentence_vectors(self, captions: list[str]) -> torch.Tensor:
        """Captions -> (N, E) sentence embeddings for the story encoder."""
        config = self.model.config.story
        if config.sentences == "scratch":
            ids = self.tokenizer.encode(captions).ids.to(self.device)
            return self.model.sentence_embeddings(ids, ids != self.model.config.dalle.pad_id)
        if self._minilm is None:
            from storyviz.text.minilm import HIDDEN_SIZE, MiniLM

            if config.sentence_dim != HIDDEN_SIZE:
                raise GenerationError(
                    f"this model's story encoder reads {config.sentence_dim}-d sentence embeddings (an imported "
                    f"release reads the Universal Sentence Encoder's, which storyviz cannot compute offline), not "
                    f"MiniLM's {HIDDEN_SIZE}-d ones, so it cannot generate stories as it is"
                )
            self._minilm = MiniLM()
        return self._minilm.sentence_embeddings(captions).to(self.device)

    def story_tokens(self, stories: list[list[str]]) -> list[torch.Tensor | None]:
        """Each story's captions -> its story tokens (L, D), or None without a story encoder."""
        if not self.model.config.story_encoder:
            return [None] * len(stories)
        vectors = self.sentence_vectors([caption for story in stories for caption in story])
        out, first = [], 0
        for story in stories:
            out.append(self.model.story_tokens(vectors[first : first + len(story)][None])[0])
            first += len(story)
        return out

    # --- generation -------------------------------------------------------------------------------------------

    def generate(
        self, requests: list[StoryRequest], options: SamplingOptions, progress: ProgressFn | None = None
    ) -> list[StoryResult]:
        self.check(requests)
        config = self.sampling_config(options)
        with torch.inference_mode():
            return self._generate_stories(requests, config, progress)

    def _generate_stories(self, requests, config: SamplingConfig, progress) -> list[StoryResult]:
        start = time.perf_counter()
        stories = [
            ([request.source_caption or ""] if request.source_frame is not None else []) + list(request.captions)
            for request in requests
        ]
        story_tokens = self.story_tokens(stories)
        truncated = self._warn_truncated([caption for request in requests for caption in request.captions])
        sources: list[torch.Tensor | None] = [None] * len(requests)  # codes of each story's source frame
        references: list[torch.Tensor | None] = [None] * len(requests)  # its image, for a reference decoder
        given = [i for i, request in enumerate(requests) if request.source_frame is not None]
        if given:
            images = self.source_images([requests[i].source_frame for i in given])
            codes = self.image_tokenizer.encode(images).reshape(len(given), -1)
            for row, i in enumerate(given):
                sources[i], references[i] = codes[row], images[row]
        phases = 2 if len(given) < len(requests) else 1
        generated, images = {}, {}  # (request, frame) -> codes (N,), decoded image (3, S, S)
        if phases == 2:  # visualization: frame 1 of each such request, without a source, then its source
            rows = [(i, 0) for i in range(len(requests)) if sources[i] is None]
            tokens = self._sample(rows, stories, story_tokens, sources, references, config, progress, (1, phases))
            for key, codes, image in zip(rows, tokens, self.decode(tokens, [None] * len(rows))):
                generated[key], images[key] = codes, image
                sources[key[0]], references[key[0]] = codes, image
        rows = [(i, frame) for i, story in enumerate(stories) for frame in range(1, len(story))]
        tokens = self._sample(rows, stories, story_tokens, sources, references, config, progress, (phases, phases))
        decoded = self.decode(tokens, [references[i] for i, _ in rows])
        for key, codes, image in zip(rows, tokens, decoded):
            generated[key], images[key] = codes, image
        frames = dict(zip(images, to_uint8(torch.stack(list(images.values())))))
        return self._results(requests, generated, frames, truncated, start)

    def _sample(self, rows, stories, story_tokens, sources, references, config, progress, phase) -> torch.Tensor:
        """Samples one frame per (request, frame index) row in one batch -> codes (R, N) (first candidate)."""
        if not rows:
            return torch.empty(0, self.transformer.config.image_len, dtype=torch.long)
        text = self.tokenizer.encode([stories[i][frame] for i, frame in rows]).ids.to(self.device)
        story = None
        if self.model.config.story_encoder:
            story = torch.stack([story_tokens[i][frame] for i, frame in rows])
        source = None
        if all(sources[i] is not None for i, _ in rows) and self.model.config.cross_layers:
            source = torch.stack([sources[i] for i, _ in rows])
        prefix, kwargs = self.model.generation_inputs(story, source, text.shape[1], text.shape[0])
        total = self.transformer.config.image_len
        tokens = None
        unconditional = self.model.unconditional_inputs(kwargs)
        steps = Engine(self.transformer).stream(
            text, config, prefix=prefix, unconditional_kwargs=unconditional, **kwargs
        )
        for step, partial in steps:
            tokens = partial
            if progress is not None:
                progress((phase[0] - 1) * total + step + 1, phase[1] * total)
        if self.scorer is not None and config.candidates > 1:
            captions = [stories[i][frame] for i, frame in rows]
            earlier = [stories[i][:frame] for i, frame in rows]
            given = [references[i] for i, _ in rows]
            tokens, _ = rerank(self.scorer, captions, tokens, self.image_tokenizer, self.grid, earlier, given)
        return tokens[:, 0]

    def _warn_truncated(self, captions: list[str]) -> list[str]:
        truncated = [captions[index] for index in self.tokenizer.encode(captions).truncated]
        for caption in dict.fromkeys(truncated):
            warnings.warn(
                f"caption longer than the model's {self.text_length} text tokens, truncated: {caption!r}", stacklevel=3
            )
        return truncated

    def _results(self, requests, generated, frames, truncated, start) -> list[StoryResult]:
        seconds = time.perf_counter() - start
        results = []
        for i, request in enumerate(requests):
            offset = 1 if request.source_frame is not None else 0
            order = [(i, offset + j) for j in range(len(request.captions))]
            results.append(
                StoryResult(
                    frames=[np.ascontiguousarray(frames[key]) for key in order],
                    captions=list(request.captions),
                    codes=[generated[key].tolist() for key in order],
                    info={
                        "task": "continuation" if offset else "visualization",
                        "truncated": [c for c in request.captions if c in truncated],
                        "seconds": seconds,
                    },
                )
            )
        return results
