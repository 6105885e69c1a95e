"""Import of a tiny checkpoint in the released StoryDALL-E layout (with the minDALL-E release folder it needs)."""

import pytest
import torch
import torch.nn.functional as F

from storyviz.cli.main import main
from storyviz.convert.storydalle import import_storydalle
from storyviz.pipelines.storydalle import StoryDallePipeline
from storyviz.weights import WeightsError
from test_convert_mindalle import HEADS, WIDTH, write_release

SENTENCE_DIM, PROMPT_LEN, PROMPT_HIDDEN = 12, 3, 20


def release_checkpoint(root, prompt: bool):
    """minDALL-E folder + `storydalle.pth` {"model_state_dict": stage1.*, stage2.*, story_*, (wte, control_trans)}."""
    generator = torch.Generator().manual_seed(1)
    stage1, stage2 = write_release(root / "1.3B", generator)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    state = {f"stage1.{k}": v for k, v in stage1.items()} | {f"stage2.{k}": v for k, v in stage2.items()}
    state["story_linear.weight"], state["story_linear.bias"] = rand(WIDTH, SENTENCE_DIM), rand(WIDTH)
    block = {k.split(".", 2)[2]: v + 0.05 for k, v in stage2.items() if k.startswith("blocks.0.")}
    state |= {f"story_block.{k}": v for k, v in block.items()}
    if prompt:
        state["wte.weight"] = rand(PROMPT_LEN, WIDTH)
        state["control_trans.0.weight"], state["control_trans.0.bias"] = rand(PROMPT_HIDDEN, WIDTH), rand(PROMPT_HIDDEN)
        state["control_trans.2.weight"], state["control_trans.2.bias"] = rand(WIDTH, PROMPT_HIDDEN), rand(WIDTH)
    torch.save({"model_state_dict": state, "epoch": 3}, root / "storydalle.pth")
    return state


def reference_story_tokens(state, sentences):
    """The released story encoder written out: linear, then one pre-LN block with a causal mask, no final norm."""
    x = sentences @ state["story_linear.weight"].T + state["story_linear.bias"]
    b = {k[len("story_block.") :]: v for k, v in state.items() if k.startswith("story_block.")}
    h = F.layer_norm(x, (WIDTH,), b["ln1.weight"], b["ln1.bias"])
    length = x.shape[1]

    def heads(t):
        return t.view(1, length, HEADS, WIDTH // HEADS).transpose(1, 2)

    q, k, v = (heads(h @ b[f"attn.{n}.weight"].T + b[f"attn.{n}.bias"]) for n in ("query", "key", "value"))
    scores = (q @ k.transpose(-1, -2)) / (WIDTH // HEADS) ** 0.5
    scores = scores.masked_fill(~torch.ones(length, length, dtype=torch.bool).tril(), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, length, WIDTH)
    x = x + y @ b["attn.proj.weight"].T + b["attn.proj.bias"]
    h = F.layer_norm(x, (WIDTH,), b["ln2.weight"], b["ln2.bias"])
    h = F.gelu(h @ b["mlp.0.weight"].T + b["mlp.0.bias"])
    return x + h @ b["mlp.2.weight"].T + b["mlp.2.bias"]


@pytest.mark.parametrize("prompt", [False, True])
def test_import_keeps_every_released_weight(tmp_path, prompt):
    state = release_checkpoint(tmp_path, prompt)
    out = import_storydalle(tmp_path / "storydalle.pth", tmp_path / "1.3B", tmp_path / "out")
    pipeline = StoryDallePipeline.from_pretrained(out)
    model = pipeline.model
    assert torch.equal(model.dalle.blocks[1].attn.query.weight, state["stage2.blocks.1.attn.query.weight"])
    assert torch.equal(model.dalle.head_img.weight, state["stage2.head_img.weight"])
    assert torch.equal(pipeline.image_tokenizer.quantize.embedding.weight, state["stage1.quantize.embedding.weight"])
    config = model.config.story
    assert (config.causal, config.sinusoidal_positions, config.final_norm) == (True, False, False)
    sentences = torch.randn(1, 4, SENTENCE_DIM)
    torch.testing.assert_close(model.story_tokens(sentences), reference_story_tokens(state, sentences))
    # text positions keep the released rows; the prefix rows are new
    prefix = model.config.prefix_len
    torch.testing.assert_close(model.dalle.pos_emb_txt.weight[prefix:], state["stage2.pos_emb_txt.weight"])
    if prompt:
        assert model.config.mode == "prompt" and model.config.prompt_len == PROMPT_LEN
        model.prompt.eval()
        hidden = torch.tanh(state["wte.weight"] @ state["control_trans.0.weight"].T + state["control_trans.0.bias"])
        expected = hidden @ state["control_trans.2.weight"].T + state["control_trans.2.bias"]
        torch.testing.assert_close(model.prompt(), expected)
    # the cross-attention was never saved by the release: it starts closed, so the source frame changes nothing yet
    closed = [p for name, p in model.named_parameters() if ".cross.proj." in name]
    assert closed and all(not p.any() for p in closed)


def test_cli_import_and_errors(tmp_path, capsys):
    release_checkpoint(tmp_path, prompt=False)
    argv = ["import", "storydalle", str(tmp_path / "storydalle.pth"), "--mindalle", str(tmp_path / "1.3B")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    state = torch.load(tmp_path / "storydalle.pth", weights_only=True)
    state["model_state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="outside the released StoryDALL-E layout: \\['extra.weight'\\]"):
        import_storydalle(tmp_path / "bad.pth", tmp_path / "1.3B", tmp_path / "out2")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    assert main(["import", "storydalle", str(tmp_path / "other.pth"), "--mindalle", str(tmp_path / "1.3B"),
                 "--out", str(tmp_path / "out3")]) == 2  # fmt: skip
    assert "model_state_dict" in capsys.readouterr().err
