"""VQGAN image tokenizer in the taming-transformers / minDALL-E stage-1 layout.

images (B, 3, H, W) in [-1, 1] -> encoder -> quant_conv -> vector quantizer -> codes (B, H/f, W/f)
codes -> codebook vectors -> post_quant_conv -> decoder -> images, with f = 2 ** (len(ch_mult) - 1).

The module tree and parameter names are those of the published models (encoder.down.{i}.block.{j}.conv1,
decoder.up.{i}.attn.{j}.q, quantize.embedding.weight, ...), so the released minDALL-E `stage1_last.ckpt`
state dict loads strictly into `VQGAN(PRESETS["mindalle"])` (343 tensors). Two taming quirks are kept because
the weights depend on them: down-sampling pads (0, 1, 0, 1) before a stride-2 3x3 conv without padding, and the
decoder's levels are stored in `up` in reverse order (up[-1] is applied first) with num_res_blocks + 1 blocks each.

With `reference_resolutions` (off in every published model), the decoder also reads a reference frame: at each
listed resolution a cross-attention block (zero-initialised output, so it starts as the plain decoder) attends to
`reference`'s map of the reference's encoder features (taken before quantisation, so it keeps what the codes
lose): the tokenizer's own encoder, frozen, or with `reference_encoder` a copy of it that trains with the decoder
(the codes stay the same either way). For story continuation the reference is the source frame, so that a look
the codes draw only roughly can be drawn as the source shows it (on sprites it lifts the reconstructions more
than the story model's samples: benchmarks/RESULTS.md). Decoding without a reference skips those blocks.

The losses here are only the quantizer's (codebook, commitment); reconstruction and GAN losses live in
storyviz.training.tasks.tokenizers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from storyviz.config import Config, ConfigError
from storyviz.image_tokenizers.layers import (
    AttnBlock,
    CrossAttnBlock,
    Downsample,
    ResnetBlock,
    Upsample,
    normalize,
    swish,
)
from storyviz.image_tokenizers.quantize import VectorQuantizer, codebook_stats
from storyviz.weights import Pretrained


@dataclass(frozen=True)
class VQGANConfig(Config):
    """Field names follow taming's `ddconfig` / minDALL-E's `stage1` config."""

    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    z_channels: int = 256
    num_groups: int = 32  # GroupNorm groups; 32 in every published model
    n_embed: int = 16384
    embed_dim: int = 256
    beta: float = 0.25  # commitment weight
    use_ema: bool = False  # EMA codebook (adds quantize.cluster_size / quantize.embed_avg to the state dict)
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    dead_code_steps: int = 0  # restart codes unused for this many training steps; 0 = never
    # decoder resolutions (e.g. (16, 32)) with a cross-attention block to a reference frame; () = none
    reference_resolutions: tuple[int, ...] = ()
    # the reference is read by an encoder of its own (starting as the tokenizer's, trained with the decoder)
    reference_encoder: bool = False

    def __post_init__(self):
        if not self.ch_mult:
            raise ConfigError("VQGANConfig.ch_mult: expected at least one level")
        factor = 2 ** (len(self.ch_mult) - 1)
        if self.resolution % factor:
            raise ConfigError(
                f"VQGANConfig.resolution: {self.resolution} is not divisible by the down-sampling {factor}"
            )
        for width in {self.ch * m for m in self.ch_mult} | {self.ch}:
            if width % self.num_groups:
                raise ConfigError(f"VQGANConfig.num_groups: {self.num_groups} does not divide channel width {width}")
        levels = {self.resolution // 2**level for level in range(len(self.ch_mult))}
        unknown = sorted(set(self.reference_resolutions) - levels)
        if unknown:
            raise ConfigError(
                f"VQGANConfig.reference_resolutions: {unknown} is not a decoder resolution (expected some of "
                f"{sorted(levels)})"
            )
        if self.reference_encoder and not self.reference_resolutions:
            raise ConfigError("VQGANConfig.reference_encoder: needs reference_resolutions (a decoder that reads it)")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


# CPU, 64 px -> 8x8 codes (f8): thin at full resolution (16 channels), wider below; ~31 GFLOP per training
# step at batch 16; EMA codebook with restarts keeps the 512 codes in use
_SMALL = VQGANConfig(
    resolution=64,
    ch=16,
    ch_mult=(1, 2, 4, 4),
    num_res_blocks=1,
    attn_resolutions=(8,),
    z_channels=64,
    num_groups=8,
    n_embed=512,
    embed_dim=64,
    use_ema=True,
    dead_code_steps=100,
)

PRESETS: dict[str, VQGANConfig] = {
    # tests: 16 px -> 8x8 codes
    "tiny": VQGANConfig(
        resolution=16,
        ch=16,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        z_channels=8,
        num_groups=4,
        n_embed=32,
        embed_dim=8,
    ),
    "small": _SMALL,
    # CPU, 64 px -> 16x16 codes (f4): more faithful, 4x longer image sequences for stage 2
    "small-f4": _SMALL.replace(ch_mult=(1, 2, 4), attn_resolutions=(16,)),
    # the released minDALL-E stage 1 (256 px -> 16x16 codes, 16384 x 256 codebook); GPUs
    "mindalle": VQGANConfig(),
}


class Encoder(nn.Module):
    """images (B, in_channels, R, R) -> latents (B, z_channels, R/f, R/f)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        c = config
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        in_mult = (1, *c.ch_mult)
        resolution = c.resolution
        self.down = nn.ModuleList()
        for level, mult in enumerate(c.ch_mult):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            channels = c.ch * in_mult[level]
            for _ in range(c.num_res_blocks):
                stage.block.append(ResnetBlock(channels, c.ch * mult, c.num_groups, c.dropout))
                channels = c.ch * mult
                if resolution in c.attn_resolutions:
                    stage.attn.append(AttnBlock(channels, c.num_groups))
            if level != len(c.ch_mult) - 1:
                stage.downsample = Downsample(channels)
                resolution //= 2
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(channels, channels, c.num_groups, c.dropout)
        self.mid.attn_1 = AttnBlock(channels, c.num_groups)
        self.mid.block_2 = ResnetBlock(channels, channels, c.num_groups, c.dropout)
        self.norm_out = normalize(channels, c.num_groups)
        self.conv_out = nn.Conv2d(channels, c.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """latents (B, z_channels, R/f, R/f) -> images (B, out_ch, R, R); `up[i]` is level i, applied last to first."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        c = config
        channels = c.ch * c.ch_mult[-1]
        resolution = c.resolution // c.downsample_factor
        self.conv_in = nn.Conv2d(c.z_channels, channels, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(channels, channels, c.num_groups, c.dropout)
        self.mid.attn_1 = AttnBlock(channels, c.num_groups)
        self.mid.block_2 = ResnetBlock(channels, channels, c.num_groups, c.dropout)
        stages = []
        for level in reversed(range(len(c.ch_mult))):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                stage.block.append(ResnetBlock(channels, c.ch * c.ch_mult[level], c.num_groups, c.dropout))
                channels = c.ch * c.ch_mult[level]
                if resolution in c.attn_resolutions:
                    stage.attn.append(AttnBlock(channels, c.num_groups))
            if resolution in c.reference_resolutions:
                latent = c.resolution // c.downsample_factor
                stage.reference = CrossAttnBlock(channels, c.ch * c.ch_mult[-1], c.num_groups, resolution, latent)
            if level != 0:
                stage.upsample = Upsample(channels)
                resolution *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = normalize(channels, c.num_groups)
        self.conv_out = nn.Conv2d(channels, c.out_ch, 3, padding=1)

    def forward(
        self, z: torch.Tensor, reference: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z (B, z_channels, h, w), reference (B, C, h', w') from VQGAN.reference_features or None; keep (B,) 0/1
        (rows at 0 decode as without the reference) or None."""
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for stage in reversed(self.up):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if reference is not None and hasattr(stage, "reference"):
                h = stage.reference(h, reference, keep)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class VQGAN(nn.Module, Pretrained):
    """forward(images (B, 3, H, W) in [-1, 1]) -> (reconstruction (B, 3, H, W), codes (B, h, w), losses).

    `losses` holds the quantizer's terms {"codebook", "commitment"} (commitment already scaled by beta).
    The reconstruction is the raw decoder output (for the losses); `decode` clamps to [-1, 1].
    """

    model_type = "vqgan"
    config_class = VQGANConfig
    # config field -> the name of the modules it adds (train.init_from a tokenizer without them keeps their start)
    added_by_fields = {"reference_resolutions": "reference", "reference_encoder": "reference_encoder"}

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(
            config.n_embed,
            config.embed_dim,
            beta=config.beta,
            use_ema=config.use_ema,
            ema_decay=config.ema_decay,
            ema_epsilon=config.ema_epsilon,
            dead_code_steps=config.dead_code_steps,
        )
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        if config.reference_resolutions:
            width = config.ch * config.ch_mult[-1]
            self.reference = nn.Sequential(
                nn.Conv2d(config.z_channels, width, 1), ResnetBlock(width, width, config.num_groups)
            )
        if config.reference_encoder:
            self.reference_encoder = Encoder(config)

    def start_added(self, new: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The first weights of modules that a trained tokenizer (state `loaded`) lacks, `new` their own start:
        a reference encoder starts as the tokenizer's encoder."""
        prefix = "reference_encoder."
        return {
            key: loaded.get("encoder." + key[len(prefix) :], value) if key.startswith(prefix) else value
            for key, value in new.items()
        }

    @property
    def reads_reference(self) -> bool:
        """Whether `decode` can take a reference frame."""
        return bool(self.config.reference_resolutions)

    @property
    def codebook_size(self) -> int:
        return self.config.n_embed

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def grid_size(self, image_size: int | None = None) -> int:
        """Codes per side for square images of `image_size` pixels (the configured resolution by default)."""
        size = self.config.resolution if image_size is None else image_size
        return size // self.downsample_factor

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight, where the GAN's adaptive weight compares gradient norms."""
        return self.decoder.conv_out.weight

    def _check_images(self, images: torch.Tensor) -> None:
        f = self.downsample_factor
        if images.dim() != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"images: expected (B, {self.config.in_channels}, H, W), got {tuple(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise ValueError(f"images: height and width must be multiples of {f}, got {tuple(images.shape[2:])}")

    def quantize_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """images (B, 3, H, W) -> (quantized latents (B, embed_dim, h, w), codes (B, h, w), losses)."""
        self._check_images(images)
        return self.quantize(self.quant_conv(self.encoder(images)))

    def reference_features(self, images: torch.Tensor) -> torch.Tensor:
        """Reference frames (B, 3, H, W) in [-1, 1] -> the map the decoder's cross-attention reads (B, C, h, w).
        The tokenizer's encoder is read without gradient (the codes of every frame stay as they are), a
        `reference_encoder` with it."""
        if not self.reads_reference:
            raise ValueError("this VQGAN's decoder reads no reference frame (reference_resolutions is empty)")
        self._check_images(images)
        if self.config.reference_encoder:
            return self.reference(self.reference_encoder(images))
        with torch.no_grad():
            features = self.encoder(images)
        return self.reference(features)

    def decode_latents(
        self, quantized: torch.Tensor, reference: torch.Tensor | None = None, keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """quantized latents (B, embed_dim, h, w) [+ reference_features, and which rows read them (B,) 0/1] ->
        raw decoder output (B, 3, H, W)."""
        return self.decoder(self.post_quant_conv(quantized), reference, keep)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        quantized, codes, losses = self.quantize_images(images)
        return self.decode_latents(quantized), codes, losses

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> codes (B, H/f, W/f) int64."""
        self._check_images(images)
        latents = self.quant_conv(self.encoder(images))
        batch, dim, height, width = latents.shape
        flat = latents.permute(0, 2, 3, 1).reshape(-1, dim)
        return self.quantize.nearest(flat).reshape(batch, height, width)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, h, w) int64 [, reference frames (B, 3, H, W) in [-1, 1]] -> images (B, 3, h*f, w*f) in
        [-1, 1]. A decoder without reference blocks ignores `reference`."""
        if codes.dim() != 3:
            raise ValueError(f"codes: expected (B, h, w), got {tuple(codes.shape)}")
        features = None
        if reference is not None and self.reads_reference:
            if len(reference) != len(codes):
                raise ValueError(f"reference: {len(reference)} frames for {len(codes)} code maps")
            features = self.reference_features(reference)
        return self.decode_latents(self.quantize.lookup(codes), features).clamp(-1.0, 1.0)

    def codebook_stats(self, codes: torch.Tensor) -> dict[str, float]:
        """codes (...) -> {"perplexity", "usage"} (see quantize.codebook_stats)."""
        return codebook_stats(codes, self.codebook_size)


@torch.no_grad()
def decode_each(tokenizer, codes: torch.Tensor, references: list[torch.Tensor | None]) -> torch.Tensor:
    """codes (R, h, w) -> images (R, 3, H, W) in [-1, 1] in one decoder pass: each row with its reference frame
    (3, H, W) in [-1, 1] by a tokenizer whose decoder reads one (`reads_reference`; a None reference decodes as
    without one), otherwise plainly (any image tokenizer). Rows that share a reference tensor (a story's frames,
    a frame's candidates) share its features, computed once."""
    given = [reference is not None for reference in references]
    if not getattr(tokenizer, "reads_reference", False) or not any(given):
        return tokenizer.decode(codes)
    unique: dict[int, int] = {}  # id of a reference tensor -> its row in `frames`
    frames: list[torch.Tensor] = []
    for reference in references:
        if reference is not None and id(reference) not in unique:
            unique[id(reference)] = len(frames)
            frames.append(reference)
    rows = [0 if reference is None else unique[id(reference)] for reference in references]  # None: keep is 0
    keep = torch.tensor(given, dtype=frames[0].dtype, device=frames[0].device)
    features = tokenizer.reference_features(torch.stack(frames))[rows]
    return tokenizer.decode_latents(tokenizer.quantize.lookup(codes), features, keep).clamp(-1.0, 1.0)
