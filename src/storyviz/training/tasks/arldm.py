"""Training tasks of ARLDM: "arldm-vae" (the first stage) and "arldm" (the latent diffusion model).

    storyviz train arldm-vae --preset small --data DATA --out runs/arldm-vae
    storyviz train arldm --preset small --data DATA --out runs/arldm --set model.vae_path=runs/arldm-vae/model

Measured on the shared 2-core machine (1 torch thread, load about 6): arldm-vae small ~1.25 s/step (3000 steps
~1 h); arldm small ~2.9 s/step while stories are first seen (text and VAE encodings computed), ~2.0-2.7 s/step
after (3000 steps of 8 stories, 2.4 epochs of 10,000 sprites stories: ~2 h).

arldm-vae: AutoencoderKL on single frames; loss = L1 + MSE of the reconstruction + kl_weight * KL. The running
latent standard deviation (the latent scale the diffusion model uses) is updated in every step.

arldm: epsilon-prediction MSE (DDPM noise schedule of the config), teacher forcing: the history of frame j is the
ground-truth frames < j and their captions, all frames of a story in one batch under the causal mask. With
probability `uncond_prob` a frame's caption and history are dropped together (the empty caption and no history),
which trains the unconditional branch of classifier-free guidance. The VAE (loaded from `vae_path` into the
model, frozen) encodes each training frame the first time its story is seen; the latents are kept in memory
for the rest of the run (and the caption token states, when the new tokens are frozen, in the MiniLM cache).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn
from torch.utils.data import Dataset

from storyviz.config import Config, ConfigError
from storyviz.data import open_dataset
from storyviz.models.arldm import ARLDM, ARLDMConfig
from storyviz.models.arldm import PRESETS as ARLDM_PRESETS
from storyviz.models.arldm_vae import ARLDMVAE, ARLDMVAEConfig
from storyviz.models.arldm_vae import PRESETS as VAE_PRESETS
from storyviz.training.task import Task, TrainConfig


def to_model_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    return frames.movedim(-1, -3).float() / 127.5 - 1.0


def base_config(config: Config, base: type[Config]) -> Config:
    return base(**{field.name: getattr(config, field.name) for field in dataclasses.fields(base)})


def extend(config: Config, task_class: type[Config], **changes: Any) -> Config:
    return task_class.from_dict({**config.to_dict(), **changes})


def task_config(config: Config, task_class: type[Config]) -> Config:
    if isinstance(config, task_class):
        return config
    return task_class(**{field.name: getattr(config, field.name) for field in dataclasses.fields(config)})


def check_image_size(data, data_path: str, size: int, what: str) -> None:
    if int(data.meta["image_size"]) != size:
        raise ConfigError(
            f"{data_path}: frames are {data.meta['image_size']} px but the {what} model expects {size} px; "
            f"choose a preset of that size or set model.image_size"
        )


# ---------------------------------------------------------------- first stage


@dataclasses.dataclass(frozen=True)
class ARLDMVAETaskConfig(ARLDMVAEConfig):
    """An `ARLDMVAEConfig` plus the loss settings."""

    kl_weight: float = 1e-6
    std_momentum: float = 0.99  # running latent standard deviation: new = m * old + (1 - m) * batch


class FrameImages(Dataset):
    """Single frames of a stories (or images) data set: item -> {"images": float (3, H, W) in [-1, 1]}."""

    def __init__(self, split):
        self.frames = split.frames()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": to_model_images(torch.from_numpy(np.asarray(self.frames[index]["image"])))}


class ARLDMVAETask(Task):
    name = "arldm-vae"
    model_presets = {name: extend(config, ARLDMVAETaskConfig) for name, config in VAE_PRESETS.items()}
    train_presets = {
        "tiny": TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, log_every=2, checkpoint_every=0),
        "small": TrainConfig(
            steps=3000, batch_size=16, lr=1e-3, warmup_steps=100, weight_decay=0.0, log_every=25, checkpoint_every=250
        ),
    }

    def __init__(self, model_config: Config, data: str):
        super().__init__(task_config(model_config, ARLDMVAETaskConfig), data)
        self.data_set = open_dataset(data)
        check_image_size(self.data_set, data, self.model_config.image_size, "arldm-vae")

    def build_model(self) -> ARLDMVAE:
        return ARLDMVAE(base_config(self.model_config, ARLDMVAEConfig))

    def dataset(self, split: str) -> Dataset:
        return FrameImages(self.data_set.split(split))

    def loss(self, model: ARLDMVAE, batch: dict, step: int, extras: nn.ModuleDict) -> tuple[torch.Tensor, dict]:
        images = batch["images"]
        posterior = model.posterior(images)
        latents = posterior.sample()
        reconstruction = model.autoencoder.decode(latents).sample
        l1 = (reconstruction - images).abs().mean()
        mse = F.mse_loss(reconstruction, images)
        kl = posterior.kl().mean() / latents[0].numel()
        with torch.no_grad():
            momentum = self.model_config.std_momentum if step > 0 else 0.0
            model.latent_std.mul_(momentum).add_((1 - momentum) * posterior.mean.float().std())
        loss = l1 + mse + self.model_config.kl_weight * kl
        return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item(), "latent_std": model.latent_std.item()}

    def sample_images(self, model: ARLDMVAE, batch: dict) -> torch.Tensor:
        """Originals above reconstructions, (2 * B, 3, H, W) in [0, 1]."""
        images = batch["images"][:8]
        return (torch.cat([images, model(images)]) + 1) / 2


# ---------------------------------------------------------------- latent diffusion


UNTRAINED = "untrained"


@dataclasses.dataclass(frozen=True)
class ARLDMTaskConfig(ARLDMConfig):
    """An `ARLDMConfig` plus the training settings: where the trained VAE is, guidance dropout."""

    vae_path: str = ""  # an arldm-vae model folder (runs/arldm-vae/model), or "untrained" (tests only)
    uncond_prob: float = 0.1  # joint dropout of caption and history (classifier-free guidance)
    cache_latents: bool = True  # keep each story's VAE latents in memory after its first use


class StoryItems(Dataset):
    """Stories: item -> {"frames": uint8 (L, H, W, 3), "captions": list[str] (L), "index": int}."""

    def __init__(self, split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        story = self.split[index]
        return {"frames": torch.from_numpy(np.asarray(story["frames"])), "captions": list(story["captions"]),
                "index": index}  # fmt: skip


def collate_stories(items: list[dict[str, Any]]) -> dict[str, Any]:
    """-> {"frames": uint8 (B, L, H, W, 3), "captions": list of B lists of L str, "index": int64 (B,)}."""
    lengths = {len(item["captions"]) for item in items}
    if len(lengths) != 1:
        raise ConfigError(f"arldm: stories of different lengths {sorted(lengths)} in one batch")
    return {
        "frames": torch.stack([item["frames"] for item in items]),
        "captions": [item["captions"] for item in items],
        "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
    }


class ARLDMTask(Task):
    name = "arldm"
    model_presets = {
        "tiny": extend(ARLDM_PRESETS["tiny"], ARLDMTaskConfig, vae_path=UNTRAINED),
        "small": extend(ARLDM_PRESETS["small"], ARLDMTaskConfig),
    }
    train_presets = {
        "tiny": TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup_steps=1, log_every=2, checkpoint_every=0),
        "small": TrainConfig(
            steps=3000,
            batch_size=8,
            lr=2e-4,
            warmup_steps=200,
            weight_decay=1e-4,
            ema_decay=0.999,
            log_every=25,
            checkpoint_every=250,
        ),
    }

    def __init__(self, model_config: Config, data: str):
        super().__init__(task_config(model_config, ARLDMTaskConfig), data)
        self.data_set = open_dataset(data)
        check_image_size(self.data_set, data, self.model_config.vae.image_size, "arldm")
        if int(self.data_set.meta["frames_per_story"]) > self.model_config.max_frames:
            raise ConfigError(
                f"{data}: stories of {self.data_set.meta['frames_per_story']} frames; "
                f"model.max_frames={self.model_config.max_frames}"
            )
        if not self.model_config.new_tokens:  # the data set's named characters become new tokens
            names = tuple(self.data_set.meta.get("characters") or ())
            self.model_config = self.model_config.replace(new_tokens=names)
        if not self.model_config.vae_path:
            raise ConfigError(
                "arldm: the first stage is missing; train it with `storyviz train arldm-vae` and pass "
                "--set model.vae_path=RUN/model (or model.vae_path=untrained, for tests)"
            )
        self.vae = None  # "untrained": the VAE of the config, as initialised
        if self.model_config.vae_path != UNTRAINED:
            self.vae = ARLDMVAE.from_pretrained(self.model_config.vae_path)
            if self.vae.config != self.model_config.vae:
                self.model_config = self.model_config.replace(vae=self.vae.config)
        self.scheduler = DDPMScheduler(**self.model_config.scheduler_config())
        self.latent_cache: dict[tuple[str, int], torch.Tensor] = {}

    def build_model(self) -> ARLDM:
        model = ARLDM(base_config(self.model_config, ARLDMConfig))
        if self.vae is not None:
            model.vae.load_state_dict(self.vae.state_dict())
        return model

    def dataset(self, split: str) -> Dataset:
        return StoryItems(self.data_set.split(split))

    def collate(self, items: list[Any]) -> Any:
        return collate_stories(items)

    def latents(self, model: ARLDM, batch: dict[str, Any], split: str = "train") -> torch.Tensor:
        """Scaled VAE latents (B, L, C, h, w) of the batch's frames (from the in-memory cache when seen before)."""
        frames = batch["frames"]
        if not self.model_config.cache_latents:
            return model.encode_images(to_model_images(frames).flatten(0, 1)).unflatten(0, frames.shape[:2])
        keys = [(split, int(index)) for index in batch["index"]]
        missing = [i for i, key in enumerate(keys) if key not in self.latent_cache]
        if missing:
            images = to_model_images(frames[missing]).flatten(0, 1)
            encoded = model.encode_images(images).unflatten(0, (len(missing), frames.shape[1]))
            for row, i in enumerate(missing):
                self.latent_cache[keys[i]] = encoded[row].cpu()
        return torch.stack([self.latent_cache[key] for key in keys]).to(frames.device)

    def loss(self, model: ARLDM, batch: dict, step: int, extras: nn.ModuleDict) -> tuple[torch.Tensor, dict]:
        latents = self.latents(model, batch)  # (B, L, C, h, w)
        count, length = latents.shape[:2]
        captions = [caption for story in batch["captions"] for caption in story]
        states, mask = model.encode_text(captions)
        states, mask = states.unflatten(0, (count, length)), mask.unflatten(0, (count, length))
        context, context_mask = model.condition(states, mask, latents)  # (B, L, S, D), (B, L, S)
        drop = torch.rand(count, length, device=latents.device) < self.model_config.uncond_prob
        if bool(drop.any()):
            empty_states, empty_mask = model.encode_text([""])
            empty, empty_mask = model.condition.unconditional(empty_states[0], empty_mask[0], length)
            context = torch.where(drop[..., None, None], empty.to(context.dtype), context)
            context_mask = torch.where(drop[..., None], empty_mask, context_mask)
        flat = latents.flatten(0, 1)
        noise = torch.randn_like(flat)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (flat.shape[0],), device=flat.device)
        noisy = self.scheduler.add_noise(flat, noise, timesteps)
        predicted = model(noisy, timesteps, context.flatten(0, 1), context_mask.flatten(0, 1))
        loss = F.mse_loss(predicted.float(), noise)
        return loss, {"uncond_share": drop.float().mean().item()}
