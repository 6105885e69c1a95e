"""Training tasks "vqgan" and "dvae": the image tokenizers (storyviz.image_tokenizers) on single frames.

    storyviz train vqgan --preset small --data DATA_DIR --out RUN_DIR [--set model.disc_weight=0.1]
    storyviz train dvae --preset small --data DATA_DIR --out RUN_DIR

Both read the frames of a split (`open_dataset(path).split(name).frames()`) as images in [-1, 1] and log PSNR
(dB, pixels in [0, 1]), codebook perplexity and usage (share of the codes used in the batch).

The task's model config is the tokenizer's config plus the loss settings (`VQGANTaskConfig` extends
`VQGANConfig`, `DVAETaskConfig` extends `DVAEConfig`), so `--set model.l1_weight=...` works like any other
field; the exported model folder holds only the tokenizer's own config.

VQGAN loss = l1 * |x - x'| + l2 * (x - x')^2 + codebook_weight * (codebook + commitment)
           [+ adaptive_weight * disc_weight * -D(x')  +  hinge(D(x), D(sg[x']))   from step `disc_start`]
With `decoder_only`, only post_quant_conv and the decoder train (the codes of every frame stay fixed), e.g. to
refine a trained tokenizer's decoder with the discriminator while stage 2 trains on its codes.
A VQGAN with `reference_resolutions` trains its decoder to read a reference frame (decoder_only, from a trained
tokenizer with `train.init_from`): each item is a frame k >= 2 of a story, decoded from its codes with frame 1 as
the reference. With `look_swap` > 0 (sprites only) the codes are those of the frame's look twin
(storyviz.data.sprites.twins: characters of frame 1 drawn with another look, each with that probability) and the
target is still the true frame, so the decoder learns to draw the looks that the source frame shows. A share
`reference_drop` of the training frames decodes their own codes without the reference (never a twin's, which
only the reference can repair), so that the plain decoding stays as it was. A `reference_encoder` (the reference's
own encoder, starting as the tokenizer's) trains with the decoder. `repair_weight` adds
repair_weight * |x - x'| averaged over the pixels that the twin changed (dilated by one pixel): a changed
accessory is a few dozen of a frame's 4096 pixels, and the plain mean barely sees it.
The optional PatchGAN discriminator is a task extra (trained by the same optimiser, not exported). Its two terms
are kept apart: the generator term runs D with detached parameters (no gradient into D), the discriminator term
sees detached reconstructions (no gradient into the VQGAN). The adaptive weight is taming's ratio of the
gradient norms of the reconstruction and generator losses at the decoder's last weight, clamped to
[0, adaptive_weight_max]. No loss needs downloaded weights (no LPIPS).

dVAE loss = l1 * |x - x'| + l2 * (x - x')^2 + kl_weight(step) * KL(q || uniform), where the decoder reads the
Gumbel-softmax relaxation at temperature tau(step) = start * (end / start) ** min(step / temperature_steps, 1)
(DALL-E: 1 -> 1/16; the minimal DALL-E: 0.9 throughout) and kl_weight rises linearly over kl_warmup_steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.utils.data import Dataset

from storyviz.config import Config, ConfigError
from storyviz.image_tokenizers.discriminator import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from storyviz.image_tokenizers.dvae import DVAE, DVAEConfig
from storyviz.image_tokenizers.dvae import PRESETS as DVAE_PRESETS
from storyviz.image_tokenizers.vqgan import PRESETS as VQGAN_PRESETS
from storyviz.image_tokenizers.vqgan import VQGAN, VQGANConfig
from storyviz.training.task import Task, TrainConfig

SAMPLE_COUNT = 8  # images shown by sample_images


# ------------------------------------------------------------------------------------------------ configs


@dataclasses.dataclass(frozen=True)
class VQGANTaskConfig(VQGANConfig):
    """A `VQGANConfig` plus the training losses' settings."""

    l1_weight: float = 1.0
    l2_weight: float = 0.0
    codebook_weight: float = 1.0
    disc_weight: float = 0.0  # 0: no discriminator
    disc_start: int = 0  # step from which the GAN terms are on
    disc_channels: int = 64
    disc_layers: int = 3
    adaptive_weight_max: float = 1e4
    # train only post_quant_conv and the decoder (and the discriminator): the encoder and codebook stay as they
    # are, so every frame's codes stay the same and stage 2 can train on them while the decoder is refined
    decoder_only: bool = False
    look_swap: float = 0.0  # reference decoders on sprites: chance that a character of frame 1 is drawn otherwise
    reference_drop: float = 0.1  # reference decoders: share of frames decoded without the reference
    repair_weight: float = 0.0  # look twins: extra L1 weight on the pixels that a twin changed (see repair_loss)


@dataclasses.dataclass(frozen=True)
class DVAETaskConfig(DVAEConfig):
    """A `DVAEConfig` plus the training losses' settings and the Gumbel-softmax temperature schedule."""

    l1_weight: float = 0.0
    l2_weight: float = 1.0
    kl_weight: float = 1e-4
    kl_warmup_steps: int = 0
    temperature_start: float = 1.0
    temperature_end: float = 1.0 / 16
    temperature_steps: int = 5000  # exponential decay from start to end over these steps; 0: end throughout


def base_config(config: Config, base: type[Config]) -> Config:
    """The fields of `config` that belong to `base` (a task config -> the model's own config)."""
    return base(**{field.name: getattr(config, field.name) for field in dataclasses.fields(base)})


def task_config(config: Config, task_class: type[Config]) -> Config:
    """A model config (or a task config) -> the task config, loss settings at their defaults when absent."""
    if isinstance(config, task_class):
        return config
    return task_class(**{field.name: getattr(config, field.name) for field in dataclasses.fields(config)})


def extend(config: Config, task_class: type[Config], **changes: Any) -> Config:
    """A model preset -> a task config with the same model fields and the given loss settings."""
    return task_class.from_dict({**config.to_dict(), **changes})


def temperature_at(step: int, start: float, end: float, steps: int) -> float:
    """Exponential interpolation from `start` (step 0) to `end` (step >= `steps`)."""
    if steps <= 0:
        return end
    return start * (end / start) ** min(step / steps, 1.0)


# ------------------------------------------------------------------------------------------------ data


def images_from_uint8(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class FrameImages(Dataset):
    """The frames of one split as uint8 tensors (H, W, 3); `collate_images` makes the float batch."""

    def __init__(self, frames: Dataset):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.frames[index]["image"]))


def collate_images(items: list[torch.Tensor]) -> torch.Tensor:
    """list of uint8 (H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return images_from_uint8(torch.stack(items))


def open_frames(data: str, split: str, image_size: int, field: str) -> FrameImages:
    from storyviz.data import open_dataset  # the data package is only needed to train

    dataset = open_dataset(data)
    size = dataset.meta.get("image_size")
    if size != image_size:
        raise ConfigError(
            f"{data}: frames are {size} px but the tokenizer is configured for {image_size} px; "
            f"build the data at {image_size} px or set model.{field}={size}"
        )
    return FrameImages(dataset.split(split).frames())


class ReferencePairs(Dataset):
    """Frames 2..L of every story with their story's frame 1: items (target, reference, input) uint8 (H, W, 3)
    and whether the decoder reads the reference (a bool tensor; not with probability `drop`); the input is the
    target or, for a frame that reads the reference and with `look_swap`, its look twin
    (storyviz.data.sprites.twins)."""

    def __init__(self, stories: Dataset, look_swap: float, drop: float, seed: int = 0):
        self.stories = stories
        self.length = int(stories.meta["frames_per_story"])
        self.look_swap = look_swap
        self.drop = drop
        self.seed = seed
        self.draws = 0

    def __len__(self) -> int:
        return len(self.stories) * (self.length - 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        story_index, frame = divmod(int(index), self.length - 1)
        story = self.stories[story_index]
        target, reference = story["frames"][frame + 1], story["frames"][0]
        self.draws += 1  # a new draw each time the item is read (every epoch, every worker)
        rng = np.random.default_rng([self.seed, index, self.draws])
        reads = not rng.random() < self.drop
        given = target
        if reads and self.look_swap > 0:
            from storyviz.data.sprites.twins import look_twin

            annotation = story["annotation"]
            twin = look_twin(annotation[frame + 1], annotation[0], target.shape[0], self.look_swap, rng)
            given = target if twin is None else twin
        images = tuple(torch.from_numpy(np.ascontiguousarray(image)) for image in (target, reference, given))
        return (*images, torch.tensor(reads))


def collate_reference_pairs(items: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    target, reference, given = (images_from_uint8(torch.stack(column)) for column in list(zip(*items))[:3])
    keep = torch.stack([item[3] for item in items]).float()
    return {"images": target, "reference": reference, "input": given, "keep": keep}


def open_reference_pairs(data: str, split: str, image_size: int, look_swap: float, drop: float) -> ReferencePairs:
    from storyviz.data import open_dataset

    dataset = open_dataset(data)
    if dataset.meta.get("image_size") != image_size:
        raise ConfigError(f"{data}: frames are {dataset.meta.get('image_size')} px, the tokenizer takes {image_size}")
    if int(dataset.meta.get("frames_per_story", 1)) < 2:
        raise ConfigError(f"{data}: a reference decoder trains on stories of at least 2 frames")
    if look_swap > 0 and dataset.meta.get("name") != "sprites":
        raise ConfigError(
            f"model.look_swap={look_swap}: look twins are drawn from sprites annotations, and {data} is "
            f"{dataset.meta.get('name')!r} data; set model.look_swap=0"
        )
    return ReferencePairs(dataset.split(split), look_swap, drop)


# ------------------------------------------------------------------------------------------------ losses


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor, l1: float, l2: float) -> torch.Tensor:
    loss = reconstruction.new_zeros(())
    if l1:
        loss = loss + l1 * (reconstruction - images).abs().mean()
    if l2:
        loss = loss + l2 * (reconstruction - images).pow(2).mean()
    return loss


def repair_loss(reconstruction: torch.Tensor, images: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Mean |x - x'| over the pixels where the decoder's input `given` (a look twin) differs from its target
    `images`, dilated by one pixel so that a part's outline counts too; 0 when no pixel differs."""
    changed = (given - images).abs().amax(1, keepdim=True) > 0
    changed = nn.functional.max_pool2d(changed.float(), 3, stride=1, padding=1)
    count = changed.sum() * images.shape[1]
    if count == 0:
        return reconstruction.new_zeros(())
    return ((reconstruction - images).abs() * changed).sum() / count


@torch.no_grad()
def psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> float:
    """Mean PSNR in dB of images in [-1, 1], measured on pixels in [0, 1] (reconstructions clamped)."""
    error = ((reconstruction.float().clamp(-1, 1) - images.float()) / 2).pow(2).flatten(1).mean(1)
    return float((-10 * torch.log10(error.clamp(min=1e-10))).mean())


def adaptive_weight(
    reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor, last_layer: torch.Tensor, maximum: float
) -> torch.Tensor:
    """taming's ||grad rec|| / (||grad gen|| + 1e-4) at `last_layer`, clamped to [0, maximum], detached."""
    if not (torch.is_grad_enabled() and last_layer.requires_grad):
        return generator_loss.new_zeros(())  # no gradients to compare (evaluation): no GAN term
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gen_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gen_grad.norm() + 1e-4)).clamp(0.0, maximum).detach()


def originals_above_reconstructions(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) twice in [-1, 1] -> one image (1, 3, 2H, B*W) in [0, 1]: originals in the top row,
    their reconstructions below."""
    top = torch.cat(list(images), dim=2)
    bottom = torch.cat(list(reconstruction.clamp(-1, 1)), dim=2)
    return ((torch.cat([top, bottom], dim=1).float() + 1) / 2).unsqueeze(0)


# ------------------------------------------------------------------------------------------------ tasks


_VQGAN_TASK_PRESETS = {
    "tiny": extend(VQGAN_PRESETS["tiny"], VQGANTaskConfig, disc_layers=2, disc_channels=16),
    "small": extend(VQGAN_PRESETS["small"], VQGANTaskConfig, l2_weight=1.0),
    "small-f4": extend(VQGAN_PRESETS["small-f4"], VQGANTaskConfig, l2_weight=1.0),
    # taming's recipe without the perceptual loss: GAN weight 0.8 from a later step
    "mindalle": extend(VQGAN_PRESETS["mindalle"], VQGANTaskConfig, disc_weight=0.8, disc_start=30000),
}


_CPU_VQGAN_TRAINING = TrainConfig(
    steps=3000, batch_size=16, lr=3e-4, warmup_steps=100, weight_decay=0.0, sample_every=250, checkpoint_every=500
)


class VQGANTask(Task):
    name = "vqgan"
    model_presets = _VQGAN_TASK_PRESETS
    train_presets = {
        "tiny": TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup_steps=2, log_every=5, checkpoint_every=0),
        "small": _CPU_VQGAN_TRAINING,
        "small-f4": _CPU_VQGAN_TRAINING,
        "mindalle": TrainConfig(
            steps=200000, batch_size=64, lr=4.5e-6 * 64, warmup_steps=1000, weight_decay=0.0, betas=(0.5, 0.9),
            precision="bf16", sample_every=1000, checkpoint_every=5000,
        ),
    }  # fmt: skip

    def __init__(self, model_config: Config, data: str):
        super().__init__(task_config(model_config, VQGANTaskConfig), data)
        c = self.model_config
        if c.reference_resolutions and not c.decoder_only:
            raise ConfigError(
                "model.reference_resolutions: a reference decoder trains on a trained tokenizer's fixed codes; "
                "set model.decoder_only=true and train.init_from=TOKENIZER"
            )
        if not 0 <= c.reference_drop <= 1 or not 0 <= c.look_swap <= 1:
            raise ConfigError(
                f"model.reference_drop={c.reference_drop}, model.look_swap={c.look_swap}: expected shares in [0, 1]"
            )
        if c.repair_weight < 0 or (c.repair_weight > 0 and (c.look_swap == 0 or not c.reference_resolutions)):
            raise ConfigError(
                f"model.repair_weight={c.repair_weight}: expected 0, or a positive weight for a reference decoder "
                "with model.look_swap > 0 (it weighs the pixels that a look twin changed)"
            )

    def build_model(self) -> VQGAN:
        return VQGAN(base_config(self.model_config, VQGANConfig))

    def build_extras(self) -> dict[str, nn.Module]:
        c = self.model_config
        if c.disc_weight <= 0:
            return {}
        return {"discriminator": PatchDiscriminator(c.in_channels, c.disc_channels, c.disc_layers)}

    def trainable_parameters(self, model: VQGAN, extras: nn.ModuleDict) -> list[nn.Parameter]:
        if not self.model_config.decoder_only:
            return super().trainable_parameters(model, extras)
        parts = [model.post_quant_conv, model.decoder, extras]
        if model.reads_reference:
            parts.append(model.reference)
        if model.config.reference_encoder:
            parts.append(model.reference_encoder)
        return [p for part in parts for p in part.parameters()]

    def dataset(self, split: str) -> Dataset:
        c = self.model_config
        if c.reference_resolutions:  # held-out frames: their own codes, always with the reference
            train = split == "train"
            return open_reference_pairs(
                self.data, split, c.resolution, c.look_swap if train else 0.0, c.reference_drop if train else 0.0
            )
        return open_frames(self.data, split, c.resolution, "resolution")

    def collate(self, items: list) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.model_config.reference_resolutions:
            return collate_reference_pairs(items)
        return collate_images(items)

    def decode_with_reference(self, model: VQGAN, batch: dict[str, torch.Tensor]) -> tuple:
        """A reference decoder's batch -> (raw reconstruction of the targets, the input's codes). Rows whose "keep"
        is 0 decode as without the reference; every parameter still takes part, as distributed training needs."""
        codes = model.encode(batch["input"])
        features = model.reference_features(batch["reference"])
        return model.decode_latents(model.quantize.lookup(codes), features, batch["keep"]), codes

    def loss(
        self, model: VQGAN, batch: torch.Tensor, step: int, extras: nn.ModuleDict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.model_config
        if c.reference_resolutions:
            images = batch["images"]
            reconstruction, codes = self.decode_with_reference(model, batch)
            vq = {"codebook": images.new_zeros(()), "commitment": images.new_zeros(())}
        elif c.decoder_only:  # fixed codes: no quantizer terms, no codebook updates
            images = batch
            codes = model.encode(images)
            reconstruction = model.decode_latents(model.quantize.lookup(codes))
            vq = {"codebook": images.new_zeros(()), "commitment": images.new_zeros(())}
        else:
            images = batch
            reconstruction, codes, vq = model(images)
        rec_loss = reconstruction_loss(reconstruction, images, c.l1_weight, c.l2_weight)
        if c.repair_weight > 0:
            repair = repair_loss(reconstruction, images, batch["input"])
            rec_loss = rec_loss + c.repair_weight * repair
        loss = rec_loss + c.codebook_weight * (vq["codebook"] + vq["commitment"])
        logs = {
            "reconstruction": rec_loss.item(),
            "codebook": vq["codebook"].item(),
            "commitment": vq["commitment"].item(),
            "psnr": psnr(reconstruction, images),
            **model.codebook_stats(codes),
        }
        if c.repair_weight > 0:
            logs["repair"] = repair.item()
        if "discriminator" in extras and step >= c.disc_start:
            discriminator = extras["discriminator"]
            frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
            generator_loss = hinge_generator_loss(functional_call(discriminator, frozen, (reconstruction,)))
            weight = adaptive_weight(rec_loss, generator_loss, model.last_layer, c.adaptive_weight_max)
            disc_loss = hinge_discriminator_loss(discriminator(images), discriminator(reconstruction.detach()))
            loss = loss + c.disc_weight * weight * generator_loss + disc_loss
            logs.update(generator=generator_loss.item(), discriminator=disc_loss.item(), adaptive_weight=weight.item())
        return loss, logs

    @torch.no_grad()
    def sample_images(self, model: VQGAN, batch) -> torch.Tensor:
        was_training = model.training
        model.eval()  # no EMA updates or code restarts while sampling
        try:
            if isinstance(batch, dict):  # reference decoder: targets, the inputs' plain decoding, with reference
                part = {name: images[:SAMPLE_COUNT] for name, images in batch.items()}
                plain = model.decode(model.encode(part["input"]))
                with_reference = model.decode(model.encode(part["input"]), part["reference"])
                rows = [part["images"], plain, with_reference]
                return ((torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1) + 1) / 2).unsqueeze(0)
            images = batch[:SAMPLE_COUNT]
            return originals_above_reconstructions(images, model.decode(model.encode(images)))
        finally:
            model.train(was_training)


_DVAE_TASK_PRESETS = {
    "tiny": extend(DVAE_PRESETS["tiny"], DVAETaskConfig, temperature_steps=10),
    "small": extend(DVAE_PRESETS["small"], DVAETaskConfig, l1_weight=1.0, temperature_steps=2500, kl_warmup_steps=500),
    # the minimal DALL-E: MSE, constant temperature 0.9
    "minimal-dalle": extend(
        DVAE_PRESETS["minimal-dalle"], DVAETaskConfig, temperature_start=0.9, temperature_end=0.9, temperature_steps=0
    ),
}


class DVAETask(Task):
    name = "dvae"
    model_presets = _DVAE_TASK_PRESETS
    train_presets = {
        "tiny": TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup_steps=2, log_every=5, checkpoint_every=0),
        "small": TrainConfig(
            steps=3000, batch_size=16, lr=1e-3, warmup_steps=100, weight_decay=0.0, sample_every=250,
            checkpoint_every=500,
        ),
        "minimal-dalle": TrainConfig(
            steps=20000, batch_size=32, lr=1e-3, warmup_steps=200, weight_decay=0.0, sample_every=1000,
            checkpoint_every=2000,
        ),
    }  # fmt: skip

    def __init__(self, model_config: Config, data: str):
        super().__init__(task_config(model_config, DVAETaskConfig), data)

    def build_model(self) -> DVAE:
        return DVAE(base_config(self.model_config, DVAEConfig))

    def dataset(self, split: str) -> Dataset:
        return open_frames(self.data, split, self.model_config.image_size, "image_size")

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return collate_images(items)

    def temperature(self, step: int) -> float:
        c = self.model_config
        return temperature_at(step, c.temperature_start, c.temperature_end, c.temperature_steps)

    def kl_weight(self, step: int) -> float:
        c = self.model_config
        return c.kl_weight * (min(1.0, step / c.kl_warmup_steps) if c.kl_warmup_steps > 0 else 1.0)

    def loss(
        self, model: DVAE, batch: torch.Tensor, step: int, extras: nn.ModuleDict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.model_config
        images = batch
        tau = self.temperature(step)
        reconstruction, codes, terms = model(images, temperature=tau)
        rec_loss = reconstruction_loss(reconstruction, images, c.l1_weight, c.l2_weight)
        loss = rec_loss + self.kl_weight(step) * terms["kl"]
        logs = {
            "reconstruction": rec_loss.item(),
            "kl": terms["kl"].item(),
            "temperature": tau,
            "psnr": psnr(reconstruction, images),
            **model.codebook_stats(codes),
        }
        return loss, logs

    @torch.no_grad()
    def sample_images(self, model: DVAE, batch: torch.Tensor) -> torch.Tensor:
        images = batch[:SAMPLE_COUNT]
        return originals_above_reconstructions(images, model.decode(model.encode(images)))
