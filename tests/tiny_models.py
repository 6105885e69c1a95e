"""Tiny real models that several tests build: trained for a few steps, in seconds."""

from pathlib import Path

import torch

from storyviz.data.build import build
from storyviz.data.codes import tokenize_dataset
from storyviz.image_tokenizers.vqgan import VQGAN, VQGANConfig
from storyviz.training.loop import train
from storyviz.training.tasks.storydalle import StoryDalleTask

# 32 px -> 4 x 4 codes over 32 entries
TINY_VQGAN = VQGANConfig(
    resolution=32,
    ch=8,
    ch_mult=(1, 2, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=8,
    num_groups=4,
    n_embed=32,
    embed_dim=8,
)


def with_random_outputs(model: VQGAN, seed: int = 0) -> VQGAN:
    """A reference decoder's zero-initialised output projections set to random values (as after training)."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "reference.proj_out" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.5
    return model


def tiny_storydalle(root: Path) -> Path:
    """A tiny StoryDALL-E bundle trained for a few steps on a 4-story sprites build at 32 px; returns its folder.
    root gets data/, vqgan/, codes/ and run/."""
    build("sprites", root / "data", count=4, size=32, seed=0)
    torch.manual_seed(0)
    VQGAN(TINY_VQGAN).save_pretrained(root / "vqgan")
    tokenize_dataset(root / "vqgan", root / "data", root / "codes")
    config = StoryDalleTask.model_presets["tiny"].replace(
        image_tokenizer=str(root / "vqgan"), codes=str(root / "codes")
    )
    return train("storydalle", config, StoryDalleTask.train_presets["tiny"], str(root / "data"), root / "run")
