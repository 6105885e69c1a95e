"""Importing a released StoryDALL-E checkpoint (the minDALL-E-based model of Maharana et al., 2022).

    storyviz import storydalle CKPT --mindalle MINDALLE_DIR --out DIR

The checkpoint (a torch pickle, read with `weights_only=True`) holds `model_state_dict` with
    stage1.*                      the VQGAN (taming layout)
    stage2.*                      the minDALL-E transformer
    story_linear.{weight,bias}    sentence embedding (512-d Universal Sentence Encoder) -> model width
    story_block.*                 one pre-LN block over the frames (causal in the release), no final LayerNorm
    wte.weight, control_trans.*   prompt mode only: the learned prompt and its Linear-Tanh-Linear
The architecture and the text tokenizer are those of the minDALL-E release it was fine-tuned from, so its folder
(config.yaml, tokenizer/) is read too. The result is a "storydalle-bundle" (transformer/, tokenizer/,
image_tokenizer/) that `storyviz generate --model DIR` uses.

What the checkpoint does not hold, and storyviz therefore starts fresh (each said in the bundle's config.json):
- the cross-attention layers: the released code kept them in a plain Python list, so they were never saved (its
  bug 1). They are added with their output projection at zero: until fine-tuned, the model ignores the source frame;
- position embeddings for the prefix (story token, prompt): fresh rows in front of the text positions.
The released story encoder had no sinusoidal positions and a causal mask; the imported config says so. Its
sentence embeddings came from the Universal Sentence Encoder (512-d), which storyviz cannot run: generating with
the imported model needs sentence vectors of that kind: the bundle records `sentences: "use-512"`, and the
pipeline refuses to generate with a 512-d story encoder instead of feeding it MiniLM's 384-d vectors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from storyviz.convert.bundle import write_bundle
from storyviz.convert.mindalle import read_config, stage1_config, stage2_config
from storyviz.image_tokenizers.vqgan import VQGAN
from storyviz.models.dalle import Dalle
from storyviz.models.story_encoder import StoryEncoderConfig
from storyviz.models.storydalle import StoryDalle, story_config
from storyviz.progress import say
from storyviz.text import TextTokenizer
from storyviz.weights import WeightsError, load_legacy_checkpoint, load_state_dict_strict

KNOWN = ("stage1.", "stage2.", "story_linear.", "story_block.", "wte.", "control_trans.")


def split_state(state: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"stage1": ..., "stage2": ..., "story_linear": ..., ...}: the checkpoint's parts, prefixes removed."""
    unknown = sorted(key for key in state if not key.startswith(KNOWN))
    if unknown:
        raise WeightsError(f"{path}: keys outside the released StoryDALL-E layout: {unknown[:10]}")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        prefix, rest = key.split(".", 1)
        parts.setdefault(prefix, {})[rest] = value
    for required in ("stage1", "stage2", "story_linear", "story_block"):
        if required not in parts:
            raise WeightsError(f"{path}: no {required}.* keys; is this a StoryDALL-E checkpoint?")
    return parts


def import_storydalle(checkpoint: str | Path, mindalle_dir: str | Path, out_dir: str | Path) -> Path:
    checkpoint, mindalle_dir = Path(checkpoint), Path(mindalle_dir)
    data = load_legacy_checkpoint(checkpoint)
    if not isinstance(data, dict) or "model_state_dict" not in data:
        raise WeightsError(f"{checkpoint}: expected a dict with 'model_state_dict' (a released StoryDALL-E checkpoint)")
    parts = split_state(data["model_state_dict"], checkpoint)
    config = read_config(mindalle_dir / "config.yaml")
    tokenizer = TextTokenizer.from_charbpe(
        mindalle_dir / "tokenizer" / "bpe-16k-vocab.json",
        mindalle_dir / "tokenizer" / "bpe-16k-merges.txt",
        length=config["dataset"]["context_length"],
    )
    base = Dalle(stage2_config(config, tokenizer.pad_id, mindalle_dir / "config.yaml"))
    load_state_dict_strict(base, parts["stage2"], f"{checkpoint} (stage2.*)")
    width = base.config.width
    sentence_dim = parts["story_linear"]["weight"].shape[1]
    prompt = parts.get("wte", {}).get("weight")
    story = StoryEncoderConfig(
        sentences="minilm",
        sentence_dim=sentence_dim,
        layers=1,
        heads=base.config.heads,
        causal=True,
        sinusoidal_positions=False,
        final_norm=False,
    )
    model_config = story_config(
        base.config,
        story=story,
        prompt_len=0 if prompt is None else prompt.shape[0],
        prompt_hidden=parts["control_trans"]["0.weight"].shape[0] if prompt is not None else 512,
        mode="prompt" if prompt is not None else "full",
    )
    model = StoryDalle.from_dalle(base, model_config)
    encoder = {f"proj.{k}": v for k, v in parts["story_linear"].items()}
    encoder.update({f"blocks.0.{k}": v for k, v in parts["story_block"].items() if not k.endswith("attn.mask")})
    load_state_dict_strict(model.story_encoder, encoder, f"{checkpoint} (story_*)")
    if prompt is not None:
        state = {"embedding.weight": prompt, **{f"mlp.{k}": v for k, v in parts["control_trans"].items()}}
        load_state_dict_strict(model.prompt, state, f"{checkpoint} (wte, control_trans)")
    if width != parts["story_linear"]["weight"].shape[0]:
        raise WeightsError(f"{checkpoint}: story_linear maps to width {parts['story_linear']['weight'].shape[0]}")
    say(f"reading {checkpoint} (stage1.*)")
    image_tokenizer = VQGAN(stage1_config(config, mindalle_dir / "config.yaml"))
    load_state_dict_strict(image_tokenizer, parts["stage1"], f"{checkpoint} (stage1.*)")
    extra = {
        "source": "storydalle",
        "source_path": str(checkpoint.resolve()),
        "sentences": f"use-{sentence_dim}" if sentence_dim != 384 else "minilm",
        "fresh": ["cross-attention (output projection at zero)", "prefix position embeddings"],
    }
    parts_out = {"transformer": model.eval(), "tokenizer": tokenizer, "image_tokenizer": image_tokenizer.eval()}
    return write_bundle(out_dir, "storydalle-bundle", parts_out, extra)
