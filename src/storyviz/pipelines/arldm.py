"""ARLDM generation: frame by frame, each generated frame re-encoded into the history of the next.

The model folder is one `arldm` folder (config.json + model.safetensors): the VAE (`vae.*`), the UNet (`unet.*`),
the conditioning (`condition.*`) and the new token rows are all in it; the text encoder is the packaged MiniLM.
`load_pipeline(folder)` (or `storyviz generate --model FOLDER`) returns an `ARLDMPipeline`.

For frame j the context is the caption of frame j plus the history of frames < j (models/arldm_condition.py);
the frame's latent starts as seeded Gaussian noise and is denoised by DDIM (eta 0, the default) or PNDM with
`options.steps` steps and classifier-free guidance `options.guidance` (1 = conditional only; the original uses
6-7.5). The decoded frame is encoded again by the VAE and becomes history slot j.

Tasks: visualization (no source frame: every caption gets a frame) and continuation (the source frame, resized
to the model's size, with `source_caption` or the empty caption, is history slot 0; every caption of the request
gets a generated frame). Request i of a call draws its noise from a generator seeded with `options.seed + i`, so
the same seed gives the same frames.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from storyviz.data.formats.common import square_resize
from storyviz.models.arldm import ARLDM
from storyviz.pipelines.base import ProgressFn, SamplingOptions, StoryPipeline, StoryRequest, StoryResult

SAMPLERS = ("ddim", "pndm")


class ARLDMPipeline(StoryPipeline):
    model_type = "arldm"
    supports_continuation = True
    progress_unit = "frame"

    def __init__(self, model: ARLDM, sampler: str = "ddim", device: str = "cpu", batch_size: int = 8):
        if sampler not in SAMPLERS:
            raise ValueError(f"arldm sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
        self.model = model.to(device).eval()
        self.sampler = sampler
        self.batch_size = batch_size  # stories generated together
        self.device = torch.device(device)
        config = model.config
        self.max_frames = config.max_frames
        self.image_size = config.vae.image_size
        self.text_length = config.max_text_tokens

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str = "cpu", sampler: str = "ddim", batch_size: int = 8
    ) -> ARLDMPipeline:
        return cls(ARLDM.from_pretrained(directory), sampler=sampler, device=device, batch_size=batch_size)

    def scheduler(self):
        """A fresh sampling scheduler (PNDM keeps state between steps) on the model's training noise schedule."""
        config = self.model.config.scheduler_config()
        if self.sampler == "pndm":
            config.pop("clip_sample")
            return PNDMScheduler(**config, skip_prk_steps=True, set_alpha_to_one=False)
        return DDIMScheduler(**config, set_alpha_to_one=False)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sampler": self.sampler, "text_encoder": self.model.config.text_encoder}

    def check(self, request: StoryRequest) -> None:
        if not request.captions:
            raise ValueError("arldm: a story request needs at least one caption")
        frames = len(request.captions) + (request.source_frame is not None)
        if frames > self.max_frames:
            raise ValueError(
                f"arldm: {len(request.captions)} captions"
                + (" plus the source frame" if request.source_frame is not None else "")
                + f" make {frames} frames; this model reads at most {self.max_frames}"
            )
        if request.source_frame is not None:
            frame = np.asarray(request.source_frame)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"arldm: source_frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")

    @torch.no_grad()
    def generate(
        self, requests: list[StoryRequest], options: SamplingOptions, progress: ProgressFn | None = None
    ) -> list[StoryResult]:
        """Requests of the same shape (frame count, with or without a source frame) are generated together in
        batches of up to `batch_size`, frame by frame; request i's noise comes from a generator seeded with
        `options.seed + i` whatever its batch."""
        if options.steps < 1:
            raise ValueError(f"arldm: steps={options.steps}; expected at least 1")
        for request in requests:
            self.check(request)
        groups: dict[tuple[int, bool], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((len(request.captions), request.source_frame is not None), []).append(index)
        total = sum(len(request.captions) for request in requests)
        done, frames, seconds = 0, {index: [] for index in range(len(requests))}, {}
        for indices in groups.values():
            for first in range(0, len(indices), self.batch_size):
                chunk = indices[first : first + self.batch_size]
                start = time.perf_counter()
                for batch_frames in self.frames(
                    [requests[i] for i in chunk], [options.seed + i for i in chunk], options
                ):
                    for index, frame in zip(chunk, batch_frames):
                        frames[index].append(frame)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                for index in chunk:
                    seconds[index] = (time.perf_counter() - start) / len(chunk)
        return [
            StoryResult(
                frames=frames[index],
                captions=list(request.captions),
                info={
                    "seconds": seconds[index],
                    "sampler": self.sampler,
                    "steps": options.steps,
                    "guidance": options.guidance,
                    "seed": options.seed + index,
                },
            )  # fmt: skip
            for index, request in enumerate(requests)
        ]

    def frames(self, requests: list[StoryRequest], seeds: list[int], options: SamplingOptions):
        """Yields, frame by frame, the B generated frames (uint8 (H, W, 3) each) of B requests of one shape."""
        model, device, config = self.model, self.device, self.model.config
        count = len(requests)
        continuation = requests[0].source_frame is not None
        captions = [
            ([request.source_caption or ""] if continuation else []) + list(request.captions) for request in requests
        ]
        length = len(captions[0])
        latent_shape = (config.vae.latent_channels, config.latent_size, config.latent_size)
        history = torch.zeros(count, length, *latent_shape, device=device)  # scaled latents of the frames so far
        if continuation:
            sources = [np.array(square_resize(np.asarray(r.source_frame), self.image_size)) for r in requests]
            history[:, 0] = model.encode_images(to_model_images(torch.from_numpy(np.stack(sources)).to(device)))
        states, mask = model.encode_text([caption for story in captions for caption in story])
        states, mask = states.unflatten(0, (count, length)), mask.unflatten(0, (count, length))  # (B, L, T, E)
        empty_states, empty_mask = model.encode_text([""])
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        for j in range(int(continuation), length):
            context, context_mask = model.condition(states[:, : j + 1], mask[:, : j + 1], history[:, : j + 1])
            context, context_mask = context[:, j], context_mask[:, j]  # (B, S, D), (B, S): frame j sees frames < j
            empty, empty_context_mask = model.condition.unconditional(empty_states[0], empty_mask[0], j + 1)
            scheduler = self.scheduler()
            scheduler.set_timesteps(options.steps)
            noise = torch.stack([torch.randn(latent_shape, generator=generator) for generator in generators])
            latents = noise.to(device) * scheduler.init_noise_sigma
            for timestep in scheduler.timesteps:
                model_input = scheduler.scale_model_input(latents, timestep)
                predicted = model.guided_noise(
                    model_input,
                    timestep.expand(count).to(device),
                    context,
                    context_mask,
                    empty,
                    empty_context_mask,
                    options.guidance,
                )
                latents = scheduler.step(predicted, timestep, latents).prev_sample
            images = model.decode_latents(latents)  # (B, 3, H, W)
            pixels = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # (B, H, W, 3)
            history[:, j] = model.encode_images(to_model_images(pixels))  # the generated frame joins the history
            yield list(pixels.cpu().numpy())


def to_model_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
