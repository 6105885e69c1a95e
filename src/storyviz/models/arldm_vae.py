"""The first stage of ARLDM: a diffusers `AutoencoderKL` trained here on the data set's frames.

Built from a config object, never from a hub name: `ARLDMVAEConfig` holds the few sizes that matter and
`diffusers_config()` turns them into the AutoencoderKL config dict. Each down block but the last halves the
side, so (16, 32, 64) maps 64 px frames to 16 x 16 x 4 latents.

    vae = ARLDMVAE(PRESETS["small"])
    latents = vae.encode(images)        # (B, 3, 64, 64) in [-1, 1] -> (B, 4, 16, 16), unit variance
    images = vae.decode(latents)        # (B, 4, 16, 16) -> (B, 3, 64, 64), clamped to [-1, 1]

`latent_std` (a buffer, saved with the weights) is a running estimate of the posterior means' standard deviation
kept during training; `encode` divides by it and `decode` multiplies by it, so the diffusion model sees latents
of about unit variance (Stable Diffusion's fixed `scaling_factor`, measured instead of guessed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class ARLDMVAEConfig(Config):
    image_size: int = 64
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # one down block each; all but the last halve the side
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16

    def __post_init__(self):
        if not self.block_out_channels:
            raise ConfigError("arldm-vae block_out_channels: expected at least one block")
        if any(channels % self.norm_num_groups for channels in self.block_out_channels):
            raise ConfigError(
                f"arldm-vae block_out_channels {list(self.block_out_channels)} must divide by "
                f"norm_num_groups={self.norm_num_groups}"
            )
        if self.image_size % self.downsample:
            raise ConfigError(f"arldm-vae image_size={self.image_size} must divide by {self.downsample}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample

    def diffusers_config(self) -> dict[str, Any]:
        blocks = len(self.block_out_channels)
        return {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * blocks,
            "up_block_types": ["UpDecoderBlock2D"] * blocks,
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": self.image_size,
            "scaling_factor": 1.0,  # replaced by the measured latent_std buffer
        }


PRESETS: dict[str, ARLDMVAEConfig] = {
    "tiny": ARLDMVAEConfig(image_size=32, block_out_channels=(8, 16), norm_num_groups=8),
    "small": ARLDMVAEConfig(image_size=64, block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8),
}


class ARLDMVAE(nn.Module, Pretrained):
    """AutoencoderKL + the measured latent scale. Images (B, 3, H, W) in [-1, 1]; latents (B, C, H/f, W/f)."""

    model_type = "arldm-vae"
    config_class = ARLDMVAEConfig

    def __init__(self, config: ARLDMVAEConfig):
        super().__init__()
        self.config = config
        self.autoencoder = AutoencoderKL(**config.diffusers_config())
        self.register_buffer("latent_std", torch.ones(()))

    def save_pretrained(self, directory, extra: dict[str, Any] | None = None):
        """config.json also shows the AutoencoderKL config (for reading; loading uses the storyviz config)."""
        return super().save_pretrained(directory, extra={"diffusers": self.config.diffusers_config(), **(extra or {})})

    def posterior(self, images: torch.Tensor):
        """The diagonal Gaussian posterior over unscaled latents (diffusers' DiagonalGaussianDistribution)."""
        self._check_images(images)
        return self.autoencoder.encode(images).latent_dist

    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None):
        """(B, 3, H, W) in [-1, 1] -> scaled latents (B, C, h, w): the posterior mean (or a sample)."""
        dist = self.posterior(images)
        latents = dist.sample(generator) if sample else dist.mean
        return latents / self.latent_std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> images (B, 3, H, W) clamped to [-1, 1]."""
        return self.autoencoder.decode(latents * self.latent_std).sample.clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction through the posterior mean: (B, 3, H, W) -> (B, 3, H, W)."""
        return self.decode(self.encode(images))

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (size, size):
            raise ValueError(f"arldm-vae expects images (B, 3, {size}, {size}), got {tuple(images.shape)}")
