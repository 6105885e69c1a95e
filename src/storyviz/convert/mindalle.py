"""Import of the released minDALL-E (kakaobrain) into a storyviz DALL-E bundle.

The release folder (e.g. `1.3B/`):
    config.yaml                          dataset / stage1 / stage2 sections
    stage1_last.ckpt                     torch pickle, ['state_dict'] = the VQGAN (taming layout, 343 tensors)
    stage2_last.ckpt                     torch pickle, ['state_dict'] = the transformer (Transformer1d layout)
    tokenizer/bpe-16k-vocab.json, tokenizer/bpe-16k-merges.txt

The checkpoints are read with `torch.load(weights_only=True)` (tensors and plain containers only). The result
is a DALL-E bundle (storyviz.convert.bundle):
    config.json        {"format_version": 1, "model_type": "dalle-bundle", "config": {"parts": ...}, "source": ...}
    transformer/       Dalle (model_type "dalle"), mask_padding false: minDALL-E attends to [PAD]
    tokenizer/         TextTokenizer built from the CharBPE files exactly as minDALL-E builds it
    image_tokenizer/   VQGAN (model_type "vqgan")
The state-dict keys of both stages are used unchanged; loading is strict and names every bad key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from storyviz.convert.bundle import DalleBundle
from storyviz.image_tokenizers.vqgan import VQGAN, VQGANConfig
from storyviz.models.dalle import Dalle, DalleConfig
from storyviz.progress import say
from storyviz.text import TextTokenizer
from storyviz.weights import WeightsError, load_legacy_checkpoint, load_state_dict_strict


def import_mindalle(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Converts a released minDALL-E folder into a storyviz DALL-E bundle at `out_dir`; returns `out_dir`."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise WeightsError(f"{src_dir}: not a folder; expected the released minDALL-E folder (with config.yaml)")
    config = read_config(src_dir / "config.yaml")
    tokenizer = TextTokenizer.from_charbpe(
        src_dir / "tokenizer" / "bpe-16k-vocab.json",
        src_dir / "tokenizer" / "bpe-16k-merges.txt",
        length=config["dataset"]["context_length"],
    )
    transformer_config = stage2_config(config, tokenizer.pad_id, src_dir / "config.yaml")
    image_config = stage1_config(config, src_dir / "config.yaml")

    say(f"reading {src_dir / 'stage2_last.ckpt'}")
    transformer = Dalle(transformer_config)
    state = _state_dict(src_dir / "stage2_last.ckpt")
    state = {key: value for key, value in state.items() if not key.endswith(".attn.mask")}  # a buffer, if saved
    load_state_dict_strict(transformer, state, str(src_dir / "stage2_last.ckpt"))

    say(f"reading {src_dir / 'stage1_last.ckpt'}")
    image_tokenizer = VQGAN(image_config)
    state = _state_dict(src_dir / "stage1_last.ckpt")
    load_state_dict_strict(image_tokenizer, state, str(src_dir / "stage1_last.ckpt"))

    bundle = DalleBundle(transformer.eval(), tokenizer, image_tokenizer.eval())
    return bundle.save_pretrained(out_dir, extra={"source": "mindalle", "source_path": str(src_dir.resolve())})


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise WeightsError(f"{path}: missing; the released minDALL-E folder holds config.yaml")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise WeightsError(f"{path}: not valid YAML ({error})") from None
    for section, fields in (
        ("dataset", ("context_length",)),
        ("stage1", ("type", "embed_dim", "n_embed", "hparams")),
        ("stage2", ("type", "vocab_size_txt", "vocab_size_img", "hparams")),
    ):
        if not isinstance(config, dict) or not isinstance(config.get(section), dict):
            raise WeightsError(f"{path}: section {section!r} missing")
        for field in fields:
            if field not in config[section]:
                raise WeightsError(f"{path}: field {section}.{field} missing")
    return config


def stage2_config(config: dict[str, Any], pad_id: int, path: Path) -> DalleConfig:
    """minDALL-E's `stage2` section -> DalleConfig (mask_padding False: the original attends to [PAD])."""
    stage2, hparams = config["stage2"], config["stage2"]["hparams"]
    _expect(path, "stage2.type", stage2["type"], "transformer1d")
    for field, expected in (("mlp_bias", True), ("attn_bias", True), ("gelu_use_approx", False)):
        _expect(path, f"stage2.hparams.{field}", hparams.get(field, expected), expected)
    _expect(
        path, "stage2.hparams.n_dense_layers", hparams.get("n_dense_layers", hparams["n_layers"]), hparams["n_layers"]
    )
    _expect(path, "stage2.hparams.ctx_len_txt", hparams["ctx_len_txt"], config["dataset"]["context_length"])
    if pad_id >= stage2["vocab_size_txt"]:
        raise WeightsError(
            f"{path}: the tokenizer's [PAD] id {pad_id} is outside the text vocabulary ({stage2['vocab_size_txt']})"
        )
    return DalleConfig(
        text_vocab_size=stage2["vocab_size_txt"],
        image_vocab_size=stage2["vocab_size_img"],
        text_len=hparams["ctx_len_txt"],
        image_len=hparams["ctx_len_img"],
        width=hparams["embed_dim"],
        layers=hparams["n_layers"],
        heads=hparams["n_heads"],
        embed_dropout=hparams.get("embd_pdrop", 0.0),
        attention_dropout=hparams.get("attn_pdrop", 0.0),
        residual_dropout=hparams.get("resid_pdrop", 0.0),
        mask_padding=False,
        pad_id=pad_id,
    )


def stage1_config(config: dict[str, Any], path: Path) -> VQGANConfig:
    """minDALL-E's `stage1` section -> VQGANConfig (taming field names)."""
    stage1, hparams = config["stage1"], config["stage1"]["hparams"]
    _expect(path, "stage1.type", stage1["type"], "vqgan")
    _expect(path, "stage1.hparams.double_z", hparams.get("double_z", False), False)
    return VQGANConfig(
        resolution=hparams["resolution"],
        in_channels=hparams["in_channels"],
        out_ch=hparams["out_ch"],
        ch=hparams["ch"],
        ch_mult=tuple(hparams["ch_mult"]),
        num_res_blocks=hparams["num_res_blocks"],
        attn_resolutions=tuple(hparams["attn_resolutions"]),
        dropout=hparams.get("pdrop", 0.0),
        z_channels=hparams["z_channels"],
        n_embed=stage1["n_embed"],
        embed_dim=stage1["embed_dim"],
    )


def _expect(path: Path, field: str, value: Any, expected: Any) -> None:
    if value != expected:
        raise WeightsError(f"{path}: {field} is {value!r}; storyviz imports minDALL-E models with {expected!r}")


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_legacy_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise WeightsError(f"{path}: expected a checkpoint holding a 'state_dict' dict")
    return checkpoint["state_dict"]
