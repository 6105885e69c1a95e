"""StoryDALL-E: the model's pieces, and proof that the released code's bugs are absent (REFERENCE §4)."""

import pytest
import torch

from storyviz.config import ConfigError
from storyviz.models.cross_attention import CrossAttention
from storyviz.models.dalle import PRESETS as DALLE_PRESETS
from storyviz.models.dalle import Dalle
from storyviz.models.source_copy import GAIN, TABLE_GAIN
from storyviz.models.story_encoder import StoryEncoderConfig
from storyviz.models.storydalle import PRESETS, StoryDalle, story_config
from storyviz.sampling import Engine, SamplingConfig
from storyviz.weights import WeightsError

TINY = PRESETS["tiny"]
BASE = TINY.dalle


def make_model(config=TINY, seed=0, open_gates=True) -> StoryDalle:
    torch.manual_seed(seed)
    model = StoryDalle(config).double()
    if open_gates:  # a trained model's cross-attention is open; a closed one (zero projection) would hide it
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if any(part in name for part in (".cross.proj.", ".cross.story.", ".cross.copy_gate.", "copy_head.")):
                    parameter.normal_(0.0, 0.05)
    return model.eval()


def inputs(batch=3, config=TINY, seed=1):
    generator = torch.Generator().manual_seed(seed)
    base = config.dalle
    text = torch.randint(1, base.text_vocab_size, (batch, base.text_len), generator=generator)
    text[0, 4:] = base.pad_id
    image = torch.randint(0, base.image_vocab_size, (batch, base.image_len), generator=generator)
    source = torch.randint(0, base.image_vocab_size, (batch, base.image_len), generator=generator)
    sentences = torch.randn(1, batch, config.story.sentence_dim, generator=generator, dtype=torch.float64)
    return text, image, source, sentences


def sampling_inputs(model):
    """What the engine takes for `inputs()`' stories: text, prefix, block keyword arguments and the guidance
    branch's replacements (`unconditional_inputs`)."""
    text, _, source, sentences = inputs()
    story = model.story_tokens(sentences)[0]
    prefix, kwargs = model.generation_inputs(story, source, text.shape[1], text.shape[0])
    return text, prefix, kwargs, model.unconditional_inputs(kwargs)


def test_cross_attention_sits_in_every_third_block_and_is_registered():
    model = make_model()
    assert TINY.cross_layers == [2]
    assert story_config(DALLE_PRESETS["1.3B"]).cross_layers == list(range(2, 42, 3))  # 14 layers, as released
    names = dict(model.named_parameters())
    for key in ("query", "key", "value", "proj", "ln_query", "ln_context"):
        assert f"dalle.blocks.2.cross.{key}.weight" in names
        assert f"dalle.blocks.2.cross.{key}.weight" in model.state_dict()
    assert not any(".cross." in name for name in names if name.startswith(("dalle.blocks.0.", "dalle.blocks.1.")))


def test_cross_attention_is_optimised_saved_and_moved(tmp_path):
    """Bug 1 of the release: cross-attention layers in a plain list were never optimised, saved or moved."""
    model = make_model().float().train()
    text, image, source, sentences = inputs()
    story = model.story_tokens(sentences.float())[0]
    before = model.dalle.blocks[2].cross.query.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    _, logits = model(text, image, story=story, source=source)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), image.flatten()).backward()
    assert model.dalle.blocks[2].cross.query.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, model.dalle.blocks[2].cross.query.weight)

    model.save_pretrained(tmp_path / "m")
    loaded = StoryDalle.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.dalle.blocks[2].cross.query.weight, model.dalle.blocks[2].cross.query.weight)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(text, image, story, source)[1], model(text, image, story, source)[1])

    model.to(torch.float64)
    assert model.dalle.blocks[2].cross.query.weight.dtype == torch.float64
    assert model.story_encoder.proj.weight.dtype == torch.float64


def test_source_frame_changes_only_image_positions_and_the_first_image_prediction():
    model = make_model()
    text, image, source, sentences = inputs()
    story = model.story_tokens(sentences)[0]
    other = torch.roll(source, 1, dims=1)
    prefix = model.prefix(story, text.shape[0])
    hidden = {}
    for name, src in (("a", source), ("b", other)):
        x = model.dalle.embed_prompt(text, prefix)
        x = torch.cat([x, model.dalle.embed_image(image[:, :-1])], dim=1)
        hidden[name] = model.dalle.run_blocks(x, **model.block_inputs(src, text.shape[1]))
    first = TINY.prefix_len + BASE.text_len - 1
    torch.testing.assert_close(hidden["a"][:, :first], hidden["b"][:, :first], rtol=0, atol=0)
    assert (hidden["a"][:, first:] - hidden["b"][:, first:]).abs().amax(dim=-1).min() > 0


def test_first_image_token_is_read_after_the_prefix():
    """Bug 3 of the release: with a prefix of length P, the first image token was read at N-1, not N+P-1."""
    model = make_model()
    text, image, source, sentences = inputs()
    story = model.story_tokens(sentences)[0]
    _, logits = model(text, image, story=story, source=source)
    prefix, kwargs = model.generation_inputs(story, source, text.shape[1], text.shape[0])
    first = model.dalle.next_image_logits(text, image[:, :0], prefix=prefix, **kwargs)
    torch.testing.assert_close(logits[:, 0].float(), first)
    # the position the release read (text_len - 1, without the prefix) gives other logits
    x = model.dalle.embed_prompt(text, prefix)
    hidden = model.dalle.run_blocks(x, key_valid=model.dalle._key_valid(text, None, TINY.prefix_len, 0), **kwargs)
    wrong = model.dalle.image_logits(hidden[:, BASE.text_len - 1]).float()
    assert not torch.allclose(wrong, first)


@pytest.mark.parametrize(("prompt_len", "additions"), [(0, False), (3, False), (3, True)])
def test_cached_steps_with_cross_attention_and_prefix_equal_full_forward(prompt_len, additions):
    """Bug 2 of the release: cached single-token steps got no cross-attention output. additions: storyviz's
    story_to_image, copy_gate and copy_source on."""
    config = story_config(
        BASE.replace(layers=3),
        story=TINY.story,
        prompt_len=prompt_len,
        story_to_image=additions,
        copy_gate=additions,
        copy_source=additions,
    )
    model = make_model(config)
    text, image, source, sentences = inputs(config=config)
    story = model.story_tokens(sentences)[0]
    _, full = model(text, image, story=story, source=source)
    prefix, kwargs = model.generation_inputs(story, source, text.shape[1], text.shape[0])
    cache = model.dalle.allocate_cache(text.shape[0], prefix.shape[1])
    logits = [model.dalle.prefill(text, cache, prefix=prefix, **kwargs)]
    for step in range(BASE.image_len - 1):
        logits.append(model.dalle.decode(image[:, step], cache, **kwargs))
    torch.testing.assert_close(torch.stack(logits, dim=1), full.float(), rtol=1e-6, atol=1e-6)
    # and without cross-attention the cached steps would differ: the source frame matters in every step
    _, without = model(text, image, story=story, source=None)
    assert (full - without)[:, 1:].abs().amax(dim=-1).min() > 0


def test_guidance_branch_has_neither_caption_nor_source_frame():
    model = make_model()
    text, prefix, kwargs, unconditional = sampling_inputs(model)
    sampling = SamplingConfig(top_k=1, guidance_scale=3.0)
    engine = Engine(model.dalle)
    tokens = engine.generate(text, sampling, prefix=prefix, unconditional_kwargs=unconditional, **kwargs).tokens
    empty = torch.full_like(text, BASE.pad_id)
    image = torch.zeros(len(text), 0, dtype=torch.long)
    for _ in range(BASE.image_len):  # uncached greedy guidance written out: the guidance branch without a source
        conditional = model.dalle.next_image_logits(text, image, prefix, **kwargs)
        plain = model.dalle.next_image_logits(empty, image, prefix)
        image = torch.cat([image, (plain + 3.0 * (conditional - plain)).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens[:, 0], image)
    with pytest.raises(ValueError, match="unconditional_kwargs"):
        engine.generate(text, sampling, prefix=prefix, unconditional_kwargs={"other": unconditional["context_rows"]})


def test_source_guidance_scales_the_source_frame_and_the_caption_apart():
    model = make_model()
    text, prefix, kwargs, unconditional = sampling_inputs(model)
    engine = Engine(model.dalle)

    def sample(**options):
        config = SamplingConfig(top_k=1, **options)
        return engine.generate(text, config, prefix=prefix, unconditional_kwargs=unconditional, **kwargs).tokens

    empty = torch.full_like(text, BASE.pad_id)
    image = torch.zeros(len(text), 0, dtype=torch.long)
    for _ in range(BASE.image_len):  # uncached greedy two-scale guidance written out
        conditional = model.dalle.next_image_logits(text, image, prefix, **kwargs)
        source_only = model.dalle.next_image_logits(empty, image, prefix, **kwargs)
        plain = model.dalle.next_image_logits(empty, image, prefix)
        logits = plain + 1.5 * (source_only - plain) + 4.0 * (conditional - source_only)
        image = torch.cat([image, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(sample(guidance_scale=4.0, source_guidance=1.5)[:, 0], image)
    assert not torch.equal(image, sample(guidance_scale=4.0)[:, 0])
    # equal scales are plain guidance
    torch.testing.assert_close(sample(guidance_scale=3.0, source_guidance=3.0), sample(guidance_scale=3.0))
    with pytest.raises(ConfigError, match="source_guidance: expected >= 0"):
        SamplingConfig(source_guidance=-1.0)


@pytest.mark.parametrize("copy_source", [False, True])
def test_engine_greedy_cached_equals_uncached_with_story_inputs(copy_source):
    model = make_model(TINY.replace(copy_source=copy_source))
    text, prefix, kwargs, unconditional = sampling_inputs(model)
    kwargs["unconditional_kwargs"] = unconditional
    for source_guidance in (0.0, 1.5):
        config = SamplingConfig(top_k=1, candidates=2, guidance_scale=2.0, source_guidance=source_guidance)
        cached = Engine(model.dalle).generate(text, config, prefix=prefix, **kwargs).tokens
        uncached = Engine(model.dalle, use_cache=False).generate(text, config, prefix=prefix, **kwargs).tokens
        assert torch.equal(cached, uncached)


def test_closed_cross_attention_leaves_a_pretrained_dalle_unchanged():
    torch.manual_seed(0)
    base = Dalle(BASE.replace(layers=3, prefix_len=0)).double().eval()
    config = story_config(base.config, story=TINY.story, story_encoder=False)
    model = StoryDalle.from_dalle(base, config).double().eval()
    text, image, source, _ = inputs()
    torch.testing.assert_close(model(text, image, source=source)[1], base(text, image)[1], rtol=0, atol=0)
    with_story = StoryDalle.from_dalle(base, story_config(base.config, story=TINY.story)).double()
    assert with_story.dalle.pos_emb_txt.weight.shape[0] == BASE.text_len + 1
    torch.testing.assert_close(with_story.dalle.pos_emb_txt.weight[1:], base.pos_emb_txt.weight)


def test_closed_cross_attention_learns_from_the_first_step():
    # the zero projection gets a gradient at once (a scalar gate at zero would leave every cross weight without one)
    model = make_model(open_gates=False).train()
    text, image, source, sentences = inputs()
    logits = model(text, image, story=model.story_tokens(sentences)[0], source=source)[1]
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), image.flatten()).backward()
    projections = [p for name, p in model.named_parameters() if name.endswith(".cross.proj.weight")]
    assert projections and all(p.grad is not None and p.grad.abs().sum() > 0 for p in projections)


def test_more_cross_attention_layers_on_a_trained_story_model_leave_it_unchanged():
    trained = make_model().float()  # cross-attention in block 2 of 3, open; float32 as from_story builds
    every_block = StoryDalle.from_story(trained, TINY.replace(cross_attention_every=1)).eval()
    assert every_block.config.cross_layers == [0, 1, 2]
    torch.testing.assert_close(every_block.dalle.blocks[2].cross.proj.weight, trained.dalle.blocks[2].cross.proj.weight)
    text, image, source, sentences = inputs()
    story = trained.story_tokens(sentences.float())[0]
    expected = trained(text, image, story=story, source=source)[1]
    torch.testing.assert_close(every_block(text, image, story=story, source=source)[1], expected, rtol=0, atol=0)
    with pytest.raises(WeightsError, match=r"drop the trained cross-attention of blocks \[2\]"):
        StoryDalle.from_story(trained, TINY.replace(cross_attention_every=2))
    with pytest.raises(WeightsError, match="may differ only in cross_attention_every"):
        StoryDalle.from_story(trained, TINY.replace(gated=False))


def test_story_to_image_starts_closed_and_then_reaches_only_the_image_predictions():
    trained = make_model().float()
    model = StoryDalle.from_story(trained, TINY.replace(story_to_image=True)).eval()
    text, image, source, sentences = inputs()
    story = trained.story_tokens(sentences.float())[0]
    for rows_source in (source, None):  # with a source frame, and without one (story visualization's first frame)
        expected = trained(text, image, story=story, source=rows_source)
        torch.testing.assert_close(model(text, image, story=story, source=rows_source), expected, rtol=0, atol=0)
    with torch.no_grad():
        model.dalle.blocks[2].cross.story.weight.normal_(0.0, 0.05)
    for rows_source in (source, None):
        text_logits, image_logits = model(text, image, story=story, source=rows_source)
        before_text, before_image = trained(text, image, story=story, source=rows_source)
        torch.testing.assert_close(text_logits, before_text, rtol=0, atol=0)  # text positions do not see it
        assert (image_logits - before_image).abs().amax(dim=-1).min() > 1e-4  # every image prediction does
    with pytest.raises(WeightsError, match="turning story_to_image, copy_gate or copy_source on"):
        StoryDalle.from_story(model, TINY)
    with pytest.raises(ConfigError, match="story_to_image needs a story encoder"):
        story_config(BASE, story_encoder=False, story_to_image=True)
    with pytest.raises(ConfigError, match="copy_gate needs cross-attention layers"):
        story_config(BASE, cross_attention_every=0, copy_gate=True)


def test_copy_gate_starts_at_one_and_can_close_the_source_frame():
    trained = make_model().float()
    model = StoryDalle.from_story(trained, TINY.replace(copy_gate=True)).eval()
    text, image, source, sentences = inputs()
    story = trained.story_tokens(sentences.float())[0]
    expected = trained(text, image, story=story, source=source)[1]
    torch.testing.assert_close(model(text, image, story=story, source=source)[1], expected, rtol=0, atol=0)
    with torch.no_grad():  # tanh -> -1: the gate shuts, as if the frame had no source
        model.dalle.blocks[2].cross.copy_gate.bias.fill_(-30.0)
    without_source = trained(text, image, story=story, source=None)[1]
    closed = model(text, image, story=story, source=source)[1]
    torch.testing.assert_close(closed, without_source, rtol=0, atol=1e-5)
    assert (expected - without_source).abs().max() > 1e-3


def test_copy_source_starts_at_zero_then_lifts_only_the_source_token_of_rows_with_a_source(tmp_path):
    trained = make_model().float()
    model = StoryDalle.from_story(trained, TINY.replace(copy_source=True)).eval()
    beta = model.dalle.copy_head.beta
    assert any(p is beta.weight for p in model.new_parameters())
    text, image, source, sentences = inputs()
    story = trained.story_tokens(sentences.float())[0]
    before_text, before = trained(text, image, story=story, source=source)
    torch.testing.assert_close(model(text, image, story=story, source=source)[1], before, rtol=0, atol=0)
    with torch.no_grad():
        beta.bias.fill_(2.5 / GAIN)
    rows = torch.tensor([True, False, True])
    text_logits, after = model(text, image, story=story, source=source, source_rows=rows)
    torch.testing.assert_close(text_logits, before_text, rtol=0, atol=0)
    expected = trained(text, image, story=story, source=source, source_rows=rows)[1].clone()
    for row in (0, 2):  # +2.5 on the source frame's token at every position, nothing else
        expected[row].scatter_add_(-1, source[row, :, None], torch.full((source.shape[1], 1), 2.5))
    torch.testing.assert_close(after, expected, rtol=1e-6, atol=1e-6)
    model.save_pretrained(tmp_path / "model")
    loaded = StoryDalle.from_pretrained(tmp_path / "model").eval()
    torch.testing.assert_close(loaded(text, image, story=story, source=source, source_rows=rows)[1], after)
    with pytest.raises(ConfigError, match="copy_source needs cross-attention layers"):
        story_config(BASE, cross_attention_every=0, copy_source=True)


def test_copy_source_reads_whether_the_left_upper_and_upper_right_tokens_agree_with_the_source():
    model = make_model(TINY.replace(copy_source=True))
    head = model.dalle.copy_head  # the tiny model's 16 image tokens: a 4 x 4 grid
    agree = torch.zeros(2, 16, dtype=torch.bool)
    agree[0, [0, 1, 2, 5]] = True  # row 0: tokens 0-2 agree, and token 5 (row 1, column 1)
    patterns = head.patterns(agree, 0, 16)
    assert patterns[0, 0] == 0  # no neighbours: outside the grid counts as disagreeing
    assert patterns[0, 1] == 1 and patterns[0, 3] == 1  # left only (no row above)
    assert patterns[0, 4] == 2 + 4  # column 0 of row 1: above (0) and above-right (1) agree, no left
    assert patterns[0, 6] == 1 + 2 + 0  # left (5) and above (2) agree, above-right (3) does not
    assert patterns[0, 5] == 2 + 4 and patterns[0, 9] == 2  # token 9: only the one above (5)
    assert patterns[0, 7] == 0 and not patterns[1].any()
    assert torch.equal(head.patterns(agree, 5, 3), patterns[:, 5:8])  # a window, as when decoding
    text, image, source, _ = inputs()
    image[:, :6] = source[:, :6]
    recorded = torch.zeros(3, 16, dtype=torch.bool)
    head.record(image, 0, source_codes=source, source_agree=recorded)
    assert torch.equal(recorded, image == source) and recorded[:, :6].all()
    one = torch.zeros(3, 16, dtype=torch.bool)
    for start in range(16):  # one token at a time, as the cached decoding feeds them
        head.record(image[:, start : start + 1], start, source_codes=source, source_agree=one)
    assert torch.equal(one, recorded)


def test_the_agreement_table_lifts_the_source_token_where_the_neighbours_agree():
    trained = make_model().float()
    model = StoryDalle.from_story(trained, TINY.replace(copy_source=True)).eval()
    head = model.dalle.copy_head
    text, _, source, sentences = inputs()
    image = torch.cat([source[:, :8], (source[:, 8:] + 1) % BASE.image_vocab_size], dim=1)  # rows 0-1 as the source
    story = trained.story_tokens(sentences.float())[0]
    before = trained(text, image, story=story, source=source)[1]
    with torch.no_grad():
        head.table[7] = 0.025  # left, above and above-right agree: +TABLE_GAIN x 0.025
    after = model(text, image, story=story, source=source)[1]
    expected = before.clone()  # only tokens 5 and 6 (row 1, columns 1-2) have all three neighbours in rows 0-1
    expected[:, 5:7] = expected[:, 5:7].scatter_add(-1, source[:, 5:7, None], torch.full((3, 2, 1), TABLE_GAIN * 0.025))
    torch.testing.assert_close(after, expected, rtol=1e-6, atol=1e-6)


def test_from_dalle_refuses_another_architecture():
    base = Dalle(BASE.replace(layers=3, width=64))
    with pytest.raises(WeightsError, match="differs from config.dalle"):
        StoryDalle.from_dalle(base, story_config(BASE.replace(layers=3), story=TINY.story))


def test_story_encoder_causal_mask_and_positions():
    causal = story_config(BASE, story=StoryEncoderConfig(sentence_dim=16, heads=2, causal=True))
    model = make_model(causal)
    sentences = torch.randn(2, 5, 16, dtype=torch.float64)
    changed = sentences.clone()
    changed[:, 4] += 1.0
    a, b = model.story_tokens(sentences), model.story_tokens(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)  # frame 5's caption is unseen by frames 1-4
    assert not torch.allclose(a[:, 4], b[:, 4])
    bidirectional = make_model(story_config(BASE, story=StoryEncoderConfig(sentence_dim=16, heads=2)))
    a, b = bidirectional.story_tokens(sentences), bidirectional.story_tokens(changed)
    assert not torch.allclose(a[:, 0], b[:, 0])
    # sinusoidal positions: the same caption at two frame positions gives two story tokens
    same = torch.randn(1, 1, 16, dtype=torch.float64).expand(1, 5, 16)
    tokens = bidirectional.story_tokens(same)
    assert not torch.allclose(tokens[0, 0], tokens[0, 1])


def test_prompt_tuning_trains_only_the_new_parts_and_embeddings():
    config = story_config(BASE.replace(layers=3), story=TINY.story, prompt_len=4, mode="prompt")
    model = make_model(config).train()
    trainable = {id(p) for p in model.trainable_parameters()}
    names = {name for name, p in model.named_parameters() if id(p) in trainable}
    assert "prompt.mlp.0.weight" in names and "dalle.blocks.2.cross.query.weight" in names
    assert "story_encoder.proj.weight" in names and "dalle.tok_emb_txt.weight" in names
    assert "dalle.blocks.0.attn.query.weight" not in names and "dalle.head_img.weight" not in names
    assert model.prefix(torch.zeros(2, BASE.width, dtype=torch.float64), 2).shape == (2, 5, BASE.width)


def test_scratch_sentence_encoder():
    story = StoryEncoderConfig(sentences="scratch", sentence_dim=16, heads=2, scratch_vocab_size=BASE.text_vocab_size)
    model = make_model(story_config(BASE, story=story))
    text, *_ = inputs(batch=5)
    vectors = model.sentence_embeddings(text, text != BASE.pad_id)
    assert vectors.shape == (5, 16)
    assert model.story_tokens(vectors[None]).shape == (1, 5, BASE.width)


def test_position_bias_reads_the_same_position_of_the_source_first():
    torch.manual_seed(0)
    attention = CrossAttention(16, 2, gated=False, grid=4).double()
    with torch.no_grad():  # scores from the bias alone: what the layer starts with before learning any content
        attention.query.weight.zero_()
        attention.query.bias.zero_()
    context = torch.randn(1, 16, 16, dtype=torch.float64)
    x = torch.randn(1, 3, 16, dtype=torch.float64)
    targets = torch.tensor([0, 5, 15])

    def output(context):
        keys, values = attention.context_keys_values(context)
        return attention(x, keys, values, targets)

    base = output(context)
    for row, target in enumerate(targets.tolist()):
        same, far = context.clone(), context.clone()
        same[0, target] += 1.0
        far[0, (target + 10) % 16] += 1.0  # another position (no initial bias there)
        change_same = (output(same) - base)[0, row].norm()
        change_far = (output(far) - base)[0, row].norm()
        assert change_same > 20 * change_far
    with pytest.raises(ValueError, match="grid"):
        attention.score_bias(targets, 9)
