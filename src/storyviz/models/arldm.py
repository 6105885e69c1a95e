"""ARLDM: auto-regressive latent diffusion for story visualization and continuation (Pan et al., WACV 2024).

One model folder (config.json + model.safetensors, `model_type` "arldm") holds everything except the text
encoder's frozen weights:
    vae.*          the first stage (`ARLDMVAE`: a diffusers AutoencoderKL, frozen here; trained by task arldm-vae)
    unet.*         the denoiser: a diffusers UNet2DConditionModel over the VAE latents
    condition.*    the conditioning (models/arldm_condition.py): text projections, image encoder, fusion layer,
                   type and frame-index embeddings
    new_token_rows the input embeddings of the new tokens (character names), (N, 384)
The text encoder is the packaged MiniLM (storyviz.text.minilm); its name is recorded in the config and a
different one is refused. The noise schedule (diffusers DDPMScheduler config) is part of the config; sampling
schedulers (DDIM, PNDM) are built from it by the pipeline (storyviz.pipelines.arldm).

    model = ARLDM(config)
    states, mask = model.encode_text(captions)                     # (N, T, 384), (N, T)
    context, context_mask = model.condition(states, mask, latents) # (B, L, S, D), (B, L, S)   (B*L = N)
    noise = model(noisy_latents, timesteps, context, context_mask) # (N, C, h, w) predicted epsilon

What differs from the original ARLDM:
- CLIP's text encoder is replaced by the packaged all-MiniLM-L6-v2 (frozen, with trainable projections; the
  original fine-tunes CLIP), and BLIP's multimodal encoder by an image encoder trained here (a small CNN over the
  frame's VAE latent -> grid**2 tokens) fused with the caption's MiniLM tokens by one transformer layer.
- The VAE and UNet are small and trained from scratch on the data set (the original fine-tunes Stable Diffusion
  1.5 at 512 px); latents are scaled by a measured standard deviation instead of 0.18215.
- New character names become placeholder tokens `<name>` of MiniLM with their own embedding rows (initialised
  to the mean of the name's sub-word rows); they are trained only with `train_new_tokens` (the text encoder then
  runs with gradients every step), else kept at their initial value and the token states are cached per caption.
- The context has a fixed layout with masked (zeroed) slots for not-yet-seen frames, so a whole story is one
  batch in training; the original builds the same causal mask over BLIP features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.models.arldm_condition import StoryCondition
from storyviz.models.arldm_vae import ARLDMVAE, ARLDMVAEConfig
from storyviz.models.arldm_vae import PRESETS as VAE_PRESETS
from storyviz.text.minilm import ENCODER_NAME, HIDDEN_SIZE, MiniLM, check_encoder_name
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class ARLDMConfig(Config):
    vae: ARLDMVAEConfig = field(default_factory=ARLDMVAEConfig)
    # denoiser (diffusers UNet2DConditionModel)
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    cross_attention_levels: tuple[bool, ...] = (True, True, False)  # cross-attention blocks at each level
    layers_per_block: int = 1
    attention_head_dim: int = 32  # channels per attention head
    norm_num_groups: int = 32
    context_dim: int = 256  # the UNet's cross_attention_dim, D
    # conditioning
    text_encoder: str = ENCODER_NAME
    new_tokens: tuple[str, ...] = ()  # character names added to the tokenizer
    train_new_tokens: bool = False
    max_text_tokens: int = 32  # T
    image_grid: int = 2  # a history frame's image tokens: image_grid**2
    image_channels: int = 64
    fusion_heads: int = 4
    max_frames: int = 5
    # noise schedule of training (diffusers DDPMScheduler)
    train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self):
        if len(self.cross_attention_levels) != len(self.block_out_channels):
            raise ConfigError(
                f"arldm cross_attention_levels {list(self.cross_attention_levels)}: expected one per block "
                f"of block_out_channels {list(self.block_out_channels)}"
            )
        if any(channels % self.norm_num_groups for channels in self.block_out_channels):
            raise ConfigError(
                f"arldm block_out_channels {list(self.block_out_channels)} must divide by "
                f"norm_num_groups={self.norm_num_groups}"
            )
        if self.max_frames < 1 or self.max_text_tokens < 3:
            raise ConfigError("arldm: expected max_frames >= 1 and max_text_tokens >= 3")

    @property
    def latent_size(self) -> int:
        return self.vae.latent_size

    def unet_config(self) -> dict[str, Any]:
        down = ["CrossAttnDownBlock2D" if cross else "DownBlock2D" for cross in self.cross_attention_levels]
        up = ["CrossAttnUpBlock2D" if cross else "UpBlock2D" for cross in reversed(self.cross_attention_levels)]
        return {
            "sample_size": self.latent_size,
            "in_channels": self.vae.latent_channels,
            "out_channels": self.vae.latent_channels,
            "down_block_types": down,
            "up_block_types": up,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            # diffusers' legacy naming: UNet2DConditionModel reads `attention_head_dim` as the number of heads
            "attention_head_dim": [max(1, channels // self.attention_head_dim) for channels in self.block_out_channels],
            "norm_num_groups": self.norm_num_groups,
            "cross_attention_dim": self.context_dim,
        }

    def scheduler_config(self) -> dict[str, Any]:
        return {
            "num_train_timesteps": self.train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": "epsilon",
            "clip_sample": False,
        }


PRESETS: dict[str, ARLDMConfig] = {
    "tiny": ARLDMConfig(
        vae=VAE_PRESETS["tiny"],
        block_out_channels=(16, 32),
        cross_attention_levels=(True, False),
        attention_head_dim=8,
        norm_num_groups=8,
        context_dim=32,
        max_text_tokens=16,
        image_channels=16,
        fusion_heads=2,
        train_timesteps=100,
    ),
    # cross-attention at 8 x 8 and 4 x 4 latents only: half the cost of also attending at 16 x 16
    "small": ARLDMConfig(
        vae=VAE_PRESETS["small"],
        block_out_channels=(32, 64, 128),
        cross_attention_levels=(False, True, True),
        norm_num_groups=16,
        image_grid=3,  # 3 x 3 image tokens per history frame: left / centre / right
    ),
}


class ARLDM(nn.Module, Pretrained):
    """The denoiser with its conditioning and first stage; forward predicts the noise of noisy latents."""

    model_type = "arldm"
    config_class = ARLDMConfig

    def __init__(self, config: ARLDMConfig):
        super().__init__()
        check_encoder_name(config.text_encoder, "arldm config text_encoder")
        self.config = config
        self.vae = ARLDMVAE(config.vae)
        self.vae.requires_grad_(False)
        self.unet = UNet2DConditionModel(**config.unet_config())
        self.condition = StoryCondition(
            text_dim=HIDDEN_SIZE,
            dim=config.context_dim,
            latent_channels=config.vae.latent_channels,
            image_channels=config.image_channels,
            grid=config.image_grid,
            max_frames=config.max_frames,
            heads=config.fusion_heads,
        )
        self.text = MiniLM(new_tokens=config.new_tokens)  # a plain attribute: its weights are never saved
        self.new_token_rows = nn.Parameter(self.text.subword_mean_rows().clone(), requires_grad=config.train_new_tokens)

    def save_pretrained(self, directory, extra: dict[str, Any] | None = None):
        """config.json also shows the diffusers configs the modules are built from (for reading; the storyviz
        config fields are what loading uses)."""
        diffusers = {"vae": self.config.vae.diffusers_config(), "unet": self.config.unet_config(),
                     "scheduler": self.config.scheduler_config()}  # fmt: skip
        return super().save_pretrained(directory, extra={"diffusers": diffusers, **(extra or {})})

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen first stage
        return self

    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> MiniLM token states (N, T, 384) and mask (N, T); T = max_text_tokens."""
        device = self.new_token_rows.device
        length = self.config.max_text_tokens
        if self.config.train_new_tokens and torch.is_grad_enabled():
            ids, mask = self.text.tokenize(captions, length)
            ids, mask = ids.to(device), mask.to(device)
            return self.text.token_states(ids, mask, self.new_token_rows), mask
        states, mask = self.text.cached_token_states(captions, length, self.new_token_rows.detach())
        return states.to(device), mask.to(device)

    def clear_text_cache(self) -> None:
        """Forgets cached token states (needed after new_token_rows change; loading weights does it)."""
        self.text.clear_cache()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.clear_text_cache()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W) in [-1, 1] -> scaled latents (N, C, h, w) (the frozen VAE's posterior mean)."""
        return self.vae.encode(images)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (N, C, h, w) -> frames (N, 3, H, W) in [-1, 1]."""
        return self.vae.decode(latents)

    def forward(
        self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """Predicted noise (N, C, h, w) of noisy latents (N, C, h, w) at timesteps (N,), context (N, S, D),
        context_mask (N, S) (1 = attend)."""
        return self.unet(latents, timesteps, encoder_hidden_states=context, encoder_attention_mask=context_mask).sample

    def guided_noise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        empty_context: torch.Tensor,
        empty_mask: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """Classifier-free guidance: uncond + scale * (cond - uncond); at scale 1 exactly the conditional prediction.

        latents (N, C, h, w); context (N, S, D), context_mask (N, S); empty_context (S, D), empty_mask (S).
        """
        if scale == 1.0:
            return self(latents, timesteps, context, context_mask)
        count = latents.shape[0]
        both = self(
            torch.cat([latents, latents]),
            torch.cat([timesteps, timesteps]),
            torch.cat([context, empty_context.expand(count, -1, -1)]),
            torch.cat([context_mask, empty_mask.expand(count, -1)]),
        )
        conditional, unconditional = both.chunk(2)
        return unconditional + scale * (conditional - unconditional)
