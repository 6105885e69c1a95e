"""Import of a tiny folder in the exact minDALL-E release layout; logits equal the reference forward."""

import json

import pytest
import torch
import yaml
from tokenizers import CharBPETokenizer

from storyviz.cli.main import main
from storyviz.convert.bundle import DalleBundle
from storyviz.convert.mindalle import import_mindalle
from storyviz.image_tokenizers.vqgan import VQGAN
from storyviz.models.dalle import Dalle
from storyviz.weights import WeightsError
from test_dalle import reference_forward

WIDTH, LAYERS, HEADS, TEXT_LEN, IMAGE_LEN = 32, 3, 4, 6, 16  # 3 layers: StoryDALL-E puts cross-attention in the third
TEXT_VOCAB, IMAGE_VOCAB = 64, 24

RELEASE_CONFIG = {  # the field structure of the release's config.yaml, tiny values
    "dataset": {"tokenizer_type": "CharBPE", "context_length": TEXT_LEN, "image_resolution": 8},
    "stage1": {
        "type": "vqgan",
        "embed_dim": 8,
        "n_embed": IMAGE_VOCAB,
        "hparams": {
            "double_z": False,
            "z_channels": 8,
            "resolution": 8,
            "in_channels": 3,
            "out_ch": 3,
            "ch": 32,
            "ch_mult": [1, 1],
            "num_res_blocks": 1,
            "attn_resolutions": [4],
            "pdrop": 0.0,
        },
    },
    "stage2": {
        "type": "transformer1d",
        "vocab_size_txt": TEXT_VOCAB,
        "vocab_size_img": IMAGE_VOCAB,
        "hparams": {
            "embed_dim": WIDTH,
            "n_layers": LAYERS,
            "n_heads": HEADS,
            "n_dense_layers": LAYERS,
            "ctx_len_img": IMAGE_LEN,
            "ctx_len_txt": TEXT_LEN,
            "embd_pdrop": 0.0,
            "resid_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "mlp_bias": True,
            "attn_bias": True,
            "gelu_use_approx": False,
        },
    },
}


def stage2_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random tensors under minDALL-E's Transformer1d keys and shapes (written from REFERENCE §3, not our model)."""

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    state = {
        "tok_emb_img.weight": rand(IMAGE_VOCAB, WIDTH),
        "tok_emb_txt.weight": rand(TEXT_VOCAB, WIDTH),
        "pos_emb_img.weight": rand(IMAGE_LEN, WIDTH),
        "pos_emb_txt.weight": rand(TEXT_LEN, WIDTH),
        "ln_f.weight": 1 + rand(WIDTH),
        "ln_f.bias": rand(WIDTH),
        "head_img.weight": rand(IMAGE_VOCAB, WIDTH),
        "head_txt.weight": rand(TEXT_VOCAB, WIDTH),
    }
    for i in range(LAYERS):
        for norm in ("ln1", "ln2"):
            state[f"blocks.{i}.{norm}.weight"] = 1 + rand(WIDTH)
            state[f"blocks.{i}.{norm}.bias"] = rand(WIDTH)
        for name in ("key", "query", "value", "proj"):
            state[f"blocks.{i}.attn.{name}.weight"] = rand(WIDTH, WIDTH)
            state[f"blocks.{i}.attn.{name}.bias"] = rand(WIDTH)
        state[f"blocks.{i}.mlp.0.weight"] = rand(4 * WIDTH, WIDTH)
        state[f"blocks.{i}.mlp.0.bias"] = rand(4 * WIDTH)
        state[f"blocks.{i}.mlp.2.weight"] = rand(WIDTH, 4 * WIDTH)
        state[f"blocks.{i}.mlp.2.bias"] = rand(WIDTH)
    return state


def write_release(root, generator):
    """1.3B/{config.yaml, stage1_last.ckpt, stage2_last.ckpt, tokenizer/bpe-16k-{vocab.json,merges.txt}}."""
    root.mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump(RELEASE_CONFIG, sort_keys=False))
    stage2 = stage2_state(generator)
    torch.save({"state_dict": stage2, "epoch": 9}, root / "stage2_last.ckpt")
    torch.manual_seed(0)
    stage1 = {key: value + 0.01 for key, value in VQGAN(_vqgan_config()).state_dict().items()}
    torch.save({"state_dict": stage1}, root / "stage1_last.ckpt")
    (root / "tokenizer").mkdir()
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    merges = [("c", "a"), ("ca", "t</w>")]
    vocab["ca"], vocab["cat</w>"] = len(vocab), len(vocab) + 1
    assert len(vocab) <= TEXT_VOCAB
    (root / "tokenizer" / "bpe-16k-vocab.json").write_text(json.dumps(vocab))
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (root / "tokenizer" / "bpe-16k-merges.txt").write_text(merges_text)
    return stage1, stage2


def _vqgan_config():
    from storyviz.convert.mindalle import stage1_config

    return stage1_config(RELEASE_CONFIG, None)


def test_import_gives_the_reference_logits(tmp_path):
    stage1, stage2 = write_release(tmp_path / "1.3B", torch.Generator().manual_seed(0))
    out = import_mindalle(tmp_path / "1.3B", tmp_path / "imported")
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "image_tokenizer", "tokenizer", "transformer"]
    bundle = DalleBundle.from_pretrained(out)
    model = bundle.transformer.double()
    assert isinstance(model, Dalle) and model.config.mask_padding is False
    assert model.config.pad_id == 0 and model.config.layers == LAYERS

    # text through the imported tokenizer equals minDALL-E's hand-built tokenizer
    captions = ["A cat", "the cat sat on the mat and the cat"]
    reference = CharBPETokenizer(
        str(tmp_path / "1.3B/tokenizer/bpe-16k-vocab.json"),
        str(tmp_path / "1.3B/tokenizer/bpe-16k-merges.txt"),
        unk_token="[UNK]",
        lowercase=True,
    )
    reference.add_special_tokens(["[PAD]"])
    reference.enable_padding(length=TEXT_LEN, pad_id=reference.token_to_id("[PAD]"))
    reference.enable_truncation(max_length=TEXT_LEN)
    text = bundle.tokenizer.encode(captions).ids
    assert text.tolist() == [encoding.ids for encoding in reference.encode_batch(captions)]

    image = torch.randint(0, IMAGE_VOCAB, (2, IMAGE_LEN), generator=torch.Generator().manual_seed(1))
    text_logits, image_logits = model(text, image)
    ref_text, ref_image = reference_forward(stage2, HEADS, text, image)  # attends to [PAD], like minDALL-E
    torch.testing.assert_close(text_logits, ref_text, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(image_logits, ref_image, rtol=1e-10, atol=1e-10)

    vqgan = bundle.image_tokenizer
    original = VQGAN(_vqgan_config())
    original.load_state_dict(stage1)
    codes = torch.randint(0, IMAGE_VOCAB, (1, 4, 4))
    torch.testing.assert_close(vqgan.decode(codes), original.decode(codes))


def test_cli_import_and_errors(tmp_path, capsys):
    write_release(tmp_path / "release", torch.Generator().manual_seed(2))
    assert main(["--quiet", "import", "mindalle", str(tmp_path / "release"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "transformer" / "model.safetensors").is_file()

    bad = dict(RELEASE_CONFIG, stage2={**RELEASE_CONFIG["stage2"], "hparams": {**RELEASE_CONFIG["stage2"]["hparams"]}})
    bad["stage2"]["hparams"]["gelu_use_approx"] = True
    (tmp_path / "release" / "config.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(WeightsError, match="gelu_use_approx"):
        import_mindalle(tmp_path / "release", tmp_path / "out2")
    (tmp_path / "release" / "config.yaml").write_text(yaml.safe_dump(RELEASE_CONFIG))
    state = torch.load(tmp_path / "release" / "stage2_last.ckpt", weights_only=True)
    del state["state_dict"]["blocks.1.mlp.2.bias"]
    torch.save(state, tmp_path / "release" / "stage2_last.ckpt")
    assert main(["import", "mindalle", str(tmp_path / "release"), "--out", str(tmp_path / "out3")]) == 2
    assert "blocks.1.mlp.2.bias" in capsys.readouterr().err
    assert not (tmp_path / "out3").exists()
