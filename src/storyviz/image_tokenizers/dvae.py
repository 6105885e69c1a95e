"""Discrete VAE image tokenizer as in DALL-E 1 and the minimal DALL-E.

images (B, 3, H, W) in [-1, 1] -> strided 4x4 convs + residual blocks -> 1x1 conv -> logits (B, K, H/f, W/f)
over a codebook of K codes, f = 2 ** len(hidden_channels). In training the decoder reads the Gumbel-softmax
relaxation of the logits (a soft one-hot at temperature tau) times the codebook; in evaluation and in
`encode`/`decode` it reads the hard one-hot of the argmax, i.e. the codebook vector of each code.

The only model-intrinsic loss is the KL divergence of the posterior softmax(logits) to the uniform prior over
the K codes (nats per position, averaged); its weight, the temperature schedule and the reconstruction loss
live in storyviz.training.tasks.tokenizers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.image_tokenizers.quantize import codebook_stats
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class DVAEConfig(Config):
    image_size: int = 64
    in_channels: int = 3
    hidden_channels: tuple[int, ...] = (64, 128, 256)  # one stride-2 conv per entry
    num_res_blocks: int = 2
    codebook_size: int = 2048
    embed_dim: int = 256

    def __post_init__(self):
        if not self.hidden_channels:
            raise ConfigError("DVAEConfig.hidden_channels: expected at least one down-sampling level")
        factor = 2 ** len(self.hidden_channels)
        if self.image_size % factor:
            raise ConfigError(
                f"DVAEConfig.image_size: {self.image_size} is not divisible by the down-sampling {factor}"
            )

    @property
    def downsample_factor(self) -> int:
        return 2 ** len(self.hidden_channels)


PRESETS: dict[str, DVAEConfig] = {
    "tiny": DVAEConfig(image_size=16, hidden_channels=(16, 32), num_res_blocks=1, codebook_size=64, embed_dim=16),
    # CPU, 64 px -> 8x8 codes
    "small": DVAEConfig(image_size=64, hidden_channels=(64, 128, 128), num_res_blocks=2, codebook_size=1024,
                        embed_dim=128),
    # the minimal DALL-E's dVAE: 3 strided convs, 2 residual blocks, 2048 codes, 112 px -> 14x14
    "minimal-dalle": DVAEConfig(image_size=112, hidden_channels=(64, 128, 256), num_res_blocks=2, codebook_size=2048,
                                embed_dim=256),
}  # fmt: skip


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))); (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class DVAE(nn.Module, Pretrained):
    """forward(images (B, 3, H, W), temperature) -> (reconstruction (B, 3, H, W), codes (B, h, w), {"kl"})."""

    model_type = "dvae"
    config_class = DVAEConfig

    def __init__(self, config: DVAEConfig):
        super().__init__()
        self.config = config
        widths = config.hidden_channels
        encoder: list[nn.Module] = []
        previous = config.in_channels
        for width in widths:
            encoder += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.ReLU()]
            previous = width
        encoder += [ResBlock(widths[-1]) for _ in range(config.num_res_blocks)]
        encoder += [nn.ReLU(), nn.Conv2d(widths[-1], config.codebook_size, 1)]
        self.encoder = nn.Sequential(*encoder)

        self.codebook = nn.Embedding(config.codebook_size, config.embed_dim)
        decoder: list[nn.Module] = [nn.Conv2d(config.embed_dim, widths[-1], 3, padding=1)]
        decoder += [ResBlock(widths[-1]) for _ in range(config.num_res_blocks)]
        decoder.append(nn.ReLU())
        for width, next_width in zip(reversed(widths), [*reversed(widths[:-1]), widths[0]]):
            decoder += [nn.ConvTranspose2d(width, next_width, 4, stride=2, padding=1), nn.ReLU()]
        decoder.append(nn.Conv2d(widths[0], config.in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*decoder)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def grid_size(self, image_size: int | None = None) -> int:
        size = self.config.image_size if image_size is None else image_size
        return size // self.downsample_factor

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder[-1].weight

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> logits over the codebook (B, K, H/f, W/f)."""
        f = self.downsample_factor
        if images.dim() != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"images: expected (B, {self.config.in_channels}, H, W), got {tuple(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise ValueError(f"images: height and width must be multiples of {f}, got {tuple(images.shape[2:])}")
        return self.encoder(images)

    def decode_soft(self, weights: torch.Tensor) -> torch.Tensor:
        """weights (B, K, h, w) over the codes (a soft or hard one-hot) -> raw reconstruction (B, 3, H, W)."""
        return self.decoder(torch.einsum("bkhw,kd->bdhw", weights, self.codebook.weight))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> raw reconstruction (B, 3, H, W) (the hard one-hot path)."""
        if codes.dim() != 3:
            raise ValueError(f"codes: expected (B, h, w), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(
                f"codes: values must lie in [0, {self.codebook_size - 1}], "
                f"found [{int(codes.min())}, {int(codes.max())}]"
            )
        return self.decoder(self.codebook(codes).permute(0, 3, 1, 2))

    def forward(
        self, images: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Training mode: Gumbel-softmax relaxation at `temperature`; eval mode: hard codes."""
        logits = self.logits(images)
        codes = logits.argmax(dim=1)
        if self.training:
            reconstruction = self.decode_soft(F.gumbel_softmax(logits, tau=temperature, hard=False, dim=1))
        else:
            reconstruction = self.decode_codes(codes)
        log_probs = F.log_softmax(logits.float(), dim=1)
        kl = (log_probs.exp() * (log_probs + math.log(self.codebook_size))).sum(dim=1).mean()
        return reconstruction, codes, {"kl": kl}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> codes (B, H/f, W/f) int64."""
        return self.logits(images).argmax(dim=1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) int64 -> images (B, 3, h*f, w*f) in [-1, 1]."""
        return self.decode_codes(codes).clamp(-1.0, 1.0)

    def codebook_stats(self, codes: torch.Tensor) -> dict[str, float]:
        """codes (...) -> {"perplexity", "usage"} (see quantize.codebook_stats)."""
        return codebook_stats(codes, self.codebook_size)
