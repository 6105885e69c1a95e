"""The sampling engine and its logit filters: cached = uncached, greedy, guidance, seeds, streaming, re-ranking."""

import pytest
import torch

from storyviz.config import ConfigError
from storyviz.models.dalle import PRESETS, Dalle
from storyviz.sampling import (
    Engine,
    SamplingConfig,
    apply_temperature,
    filtered_distribution,
    guidance,
    sample_next,
    top_k_filter,
    top_k_values,
    top_p_filter,
)

TINY = PRESETS["tiny"]
INF = float("inf")


def make_model(config=TINY, dtype=torch.float64):
    torch.manual_seed(0)
    return Dalle(config).to(dtype).eval()


def prompts(batch=2):
    torch.manual_seed(1)
    text = torch.randint(1, TINY.text_vocab_size, (batch, TINY.text_len))
    text[0, 4:] = TINY.pad_id
    return text


# --- filters ----------------------------------------------------------------------------------------------------


def test_top_k_filter():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [0.0, -1.0, 5.0, 5.0]])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [[-INF, 4.0, 3.0, -INF], [-INF, -INF, 5.0, 5.0]]
    assert top_k_filter(logits, 1)[0].tolist() == [-INF, 4.0, -INF, -INF]
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 10), logits)
    assert logits[0, 0] == 1.0  # the input is not modified


def test_top_p_filter():
    probabilities = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probabilities.log()
    assert torch.isinf(top_p_filter(logits, 0.5)).tolist() == [[False, True, True, True]]
    assert torch.isinf(top_p_filter(logits, 0.6)).tolist() == [[False, False, True, True]]
    assert torch.isinf(top_p_filter(logits, 0.9)).tolist() == [[False, False, False, True]]
    assert torch.isinf(top_p_filter(logits, 0.01)).tolist() == [[False, True, True, True]]  # at least one
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    shuffled = logits[:, [2, 0, 3, 1]]  # order of the vocabulary does not matter
    assert torch.isinf(top_p_filter(shuffled, 0.6)).tolist() == [[True, False, True, False]]
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(logits, 0.0)


@pytest.mark.parametrize(("vocabulary", "k"), [(16384, 256), (4096, 16), (1024, 64), (4000, 10)])
def test_top_k_values_are_torch_topk_values(vocabulary, k):
    torch.manual_seed(0)
    logits = torch.randn(5, vocabulary)
    logits[1] = logits[1].round()  # many ties, some with the k-th value
    logits[2, : vocabulary // 2] = -INF
    logits[3, 8:16] = 50.0  # all the largest values in one chunk
    values, ids = top_k_values(logits, k)
    expected = torch.topk(logits, k).values
    assert torch.equal(values.sort(dim=-1, descending=True).values, expected)
    assert torch.equal(logits.gather(1, ids), values)
    assert (ids.sort(dim=-1).values.diff(dim=-1) > 0).all()  # k distinct ids
    sorted_values, _ = top_k_values(logits, k, sorted=True)
    assert torch.equal(sorted_values, expected)


def test_temperature_and_guidance():
    logits = torch.tensor([[2.0, -4.0]])
    assert apply_temperature(logits, 2.0).tolist() == [[1.0, -2.0]]
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(logits, 0.0)
    conditional, unconditional = torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    assert torch.equal(guidance(conditional, unconditional, 1.0), conditional)
    assert guidance(conditional, unconditional, 3.0).tolist() == [[7.0, 1.0]]
    assert guidance(conditional, unconditional, 0.0).tolist() == [[1.0, 1.0]]


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 8, 0.6), (1.0, 0, 0.3)]
)
def test_filtered_distribution_equals_filters_composed(temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(3, 20) * 3
    probabilities, ids = filtered_distribution(logits, temperature, top_k, top_p)
    expected = top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p).softmax(-1)
    dense = torch.zeros_like(expected).scatter(1, ids, probabilities)
    torch.testing.assert_close(dense, expected)
    assert ids.shape[1] == (top_k or 20)


def test_sample_next_top_k_one_is_argmax_and_samples_stay_in_top_k():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    generator = torch.Generator().manual_seed(0)
    greedy = sample_next(logits, SamplingConfig(top_k=1, temperature=5.0), generator)
    assert torch.equal(greedy, logits.argmax(-1))
    allowed = torch.topk(logits, 3).indices
    for _ in range(20):
        token = sample_next(logits, SamplingConfig(top_k=3), generator)
        assert (allowed == token[:, None]).any(dim=1).all()


def test_sample_next_follows_the_filtered_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0, 3.0]).log_softmax(-1).expand(20000, 5)
    config = SamplingConfig(top_k=3, temperature=0.8, seed=0)
    tokens = sample_next(logits, config, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=5).float() / len(tokens)
    expected = top_k_filter(logits[:1] / 0.8, 3).softmax(-1)[0]
    assert frequencies[0] == 0 and frequencies[3] == 0
    torch.testing.assert_close(frequencies, expected, atol=0.015, rtol=0)


def test_sampling_config_errors():
    with pytest.raises(ConfigError, match="top_p"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ConfigError, match="candidates"):
        SamplingConfig(candidates=0)
    assert SamplingConfig().with_overrides(["top_k=1"]).top_k == 1


# --- engine -------------------------------------------------------------------------------------------------------


def greedy_reference(model, text, prefix=None, scale=1.0, start=0):
    """Uncached greedy decoding written out with the model's full forward, with guidance done by hand (from image
    token `start` on)."""
    image = torch.zeros(text.shape[0], 0, dtype=torch.long)
    all_logits = []
    for step in range(model.config.image_len):
        logits = model.next_image_logits(text, image, prefix)
        if scale != 1.0 and step >= start:
            empty = torch.full_like(text, model.config.pad_id)
            unconditional = model.next_image_logits(empty, image, prefix)
            logits = unconditional + scale * (logits - unconditional)
        all_logits.append(logits)
        image = torch.cat([image, logits.argmax(-1, keepdim=True)], dim=1)
    return image, torch.stack(all_logits, dim=1)


@pytest.mark.parametrize("mask_padding", [False, True])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_cached_decoding_equals_uncached_at_every_step(mask_padding, with_prefix):
    config = TINY.replace(mask_padding=mask_padding, prefix_len=2 if with_prefix else 0)
    model = make_model(config)
    text = prompts()
    prefix = torch.randn(2, 2, config.width, dtype=torch.float64) if with_prefix else None
    expected_tokens, expected_logits = greedy_reference(model, text, prefix)
    cache = model.allocate_cache(2, prefix_len=0 if prefix is None else 2)
    logits = [model.prefill(text, cache, prefix=prefix)]
    for step in range(config.image_len - 1):
        logits.append(model.decode(expected_tokens[:, step], cache))
    torch.testing.assert_close(torch.stack(logits, dim=1), expected_logits.float(), rtol=1e-5, atol=1e-5)
    for use_cache in (True, False):
        tokens = Engine(model, use_cache=use_cache).generate(text, SamplingConfig(top_k=1), prefix=prefix).tokens
        assert tokens.shape == (2, 1, config.image_len)
        assert torch.equal(tokens[:, 0], expected_tokens)


def test_cached_equals_uncached_in_float32_sampling():
    model = make_model(dtype=torch.float32)
    text = prompts()
    config = SamplingConfig(top_k=8, top_p=0.9, temperature=1.2, candidates=2, seed=3)
    cached = Engine(model).generate(text, config).tokens
    uncached = Engine(model, use_cache=False).generate(text, config).tokens
    assert torch.equal(cached, uncached)


def test_guidance():
    model = make_model()
    text = prompts()
    plain = Engine(model).generate(text, SamplingConfig(top_k=1)).tokens
    assert torch.equal(Engine(model).generate(text, SamplingConfig(top_k=1, guidance_scale=1.0)).tokens, plain)
    expected, _ = greedy_reference(model, text, scale=4.0)
    for use_cache in (True, False):
        guided = Engine(model, use_cache=use_cache).generate(text, SamplingConfig(top_k=1, guidance_scale=4.0))
        assert torch.equal(guided.tokens[:, 0], expected)
    assert not torch.equal(expected, plain[:, 0])
    # guidance from token 5 on: the first five tokens are the plain ones, then guidance steers
    late, _ = greedy_reference(model, text, scale=4.0, start=5)
    for use_cache in (True, False):
        config = SamplingConfig(top_k=1, guidance_scale=4.0, guidance_start=5)
        assert torch.equal(Engine(model, use_cache=use_cache).generate(text, config).tokens[:, 0], late)
    assert torch.equal(late[:, :5], plain[:, 0, :5]) and not torch.equal(late, plain[:, 0])
    with pytest.raises(ConfigError, match="guidance_start: expected >= 0"):
        SamplingConfig(guidance_start=-1)


def test_seed_gives_identical_output_and_candidates_differ():
    model = make_model(dtype=torch.float32)
    text = prompts()
    config = SamplingConfig(top_k=0, candidates=3, seed=7)
    first = Engine(model).generate(text, config).tokens
    again = Engine(model).generate(text, config).tokens
    other = Engine(model).generate(text, config.replace(seed=8)).tokens
    assert first.shape == (2, 3, TINY.image_len)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first[:, 0], first[:, 1])  # 32-way choices at 16 steps: equal only by accident


def test_streaming_yields_every_step_and_the_same_final_tokens():
    model = make_model(dtype=torch.float32)
    text = prompts()
    config = SamplingConfig(top_k=5, candidates=2, seed=1, guidance_scale=2.0)
    final = Engine(model).generate(text, config).tokens
    seen = list(Engine(model).stream(text, config))
    assert [step for step, _ in seen] == list(range(TINY.image_len))
    for step, tokens in seen:
        assert tokens.shape == (2, 2, step + 1)
        assert torch.equal(tokens, final[:, :, : step + 1])


def test_scorer_reranks_candidates():
    model = make_model(dtype=torch.float32)
    text = prompts()
    config = SamplingConfig(top_k=0, candidates=4, seed=2)
    plain = Engine(model).generate(text, config).tokens

    def scorer(tokens):  # prefers candidates with many zeros
        return (tokens == 0).sum(-1).float() + torch.arange(tokens.shape[1]) * 1e-3

    ranked = Engine(model).generate(text, config, scorer=scorer)
    assert ranked.scores.shape == (2, 4)
    assert (ranked.scores[:, :-1] >= ranked.scores[:, 1:]).all()
    for b in range(2):
        order = scorer(plain)[b].argsort(descending=True)
        assert torch.equal(ranked.tokens[b], plain[b, order])
    with pytest.raises(ValueError, match="scorer"):
        Engine(model).generate(text, config, scorer=lambda tokens: torch.zeros(3))


def test_engine_repeats_block_arguments_per_candidate():
    model = make_model()
    text = prompts()
    # a tensor keyword argument with one row per prompt reaches the blocks with one row per candidate
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["marker"].shape[0])

    handle = model.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    Engine(model).generate(text, SamplingConfig(top_k=1, candidates=3, guidance_scale=2.0), marker=torch.ones(2, 1))
    handle.remove()
    assert set(seen) == {2 * 3 * 2}


def test_guidance_with_a_prefix_uses_the_unconditional_prefix():
    config = TINY.replace(prefix_len=2)
    model = make_model(config)
    text = prompts()
    prefix = torch.randn(2, 2, config.width, dtype=torch.float64)
    unconditional_prefix = torch.randn(2, 2, config.width, dtype=torch.float64)
    sampling = SamplingConfig(top_k=1, guidance_scale=3.0)
    tokens = Engine(model).generate(text, sampling, prefix=prefix, unconditional_prefix=unconditional_prefix).tokens
    image = torch.zeros(2, 0, dtype=torch.long)
    empty = torch.full_like(text, config.pad_id)
    for _ in range(config.image_len):  # uncached greedy guidance written out
        conditional = model.next_image_logits(text, image, prefix)
        unconditional = model.next_image_logits(empty, image, unconditional_prefix)
        image = torch.cat([image, (unconditional + 3.0 * (conditional - unconditional)).argmax(-1, keepdim=True)], 1)
    assert torch.equal(tokens[:, 0], image)
    with pytest.raises(ValueError, match="unconditional_prefix"):
        Engine(model).generate(text, sampling, unconditional_prefix=unconditional_prefix)


def test_decoding_past_the_last_image_position_is_refused():
    model = make_model()
    cache = model.allocate_cache(1)
    model.prefill(prompts(1), cache)
    for _ in range(TINY.image_len):
        model.decode(torch.zeros(1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="image position"):
        model.decode(torch.zeros(1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="empty KV cache"):
        model.prefill(prompts(1), cache)
    keys = torch.zeros(1, TINY.heads, 1, TINY.width // TINY.heads, dtype=torch.float64)
    with pytest.raises(ValueError, match="KV cache holds 24 positions"):
        cache.store(0, keys, keys)
