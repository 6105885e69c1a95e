import pytest
import torch

from storyviz.text.minilm import ENCODER_NAME, MiniLM, TextEncoderError, check_encoder_name


@pytest.fixture(scope="module")
def encoder():
    return MiniLM(new_tokens=("Bo", "Kiki"))


def test_sentence_embeddings_are_unit_vectors_and_rank_meaning(encoder):
    captions = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    vectors = encoder.sentence_embeddings(captions)
    assert vectors.shape == (3, 384)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    again = encoder.sentence_embeddings(captions[::-1])  # from the cache, in the asked order
    assert torch.equal(again, vectors.flip(0))


def test_sentence_embeddings_ignore_new_tokens(encoder):
    plain = MiniLM()
    caption = ["Bo and Kiki play in the park."]
    assert torch.allclose(plain.sentence_embeddings(caption), encoder.sentence_embeddings(caption), atol=1e-6)


def test_new_tokens_are_whole_words_with_their_own_ids(encoder):
    ids, mask = encoder.tokenize(["Bo finds a boat; KIKI and bo.", ""], max_length=16)
    base = encoder.base_vocab_size
    tokens = ids[0][mask[0].bool()].tolist()
    assert tokens.count(base) == 2  # "Bo" and "bo", not the "bo" of "boat"
    assert tokens.count(base + 1) == 1
    assert sum(token >= base for token in tokens) == 3
    assert mask[1].sum() == 2  # [CLS] [SEP] of the empty caption
    assert encoder.vocab_size == base + 2


def test_token_states_train_only_the_new_rows(encoder):
    rows = torch.nn.Parameter(encoder.subword_mean_rows())
    ids, mask = encoder.tokenize(["Bo jumps."], max_length=8)
    states = encoder.token_states(ids, mask, rows)
    assert states.shape == (1, 8, 384)
    states.sum().backward()
    assert rows.grad[0].abs().sum() > 0  # "Bo" is used
    assert rows.grad[1].abs().sum() == 0  # "Kiki" is not
    assert all(parameter.grad is None for parameter in encoder.model.parameters())


def test_cached_token_states_equal_uncached(encoder):
    rows = encoder.subword_mean_rows()
    captions = ["Kiki waves.", "Bo runs in the snow."]
    cached, mask = encoder.cached_token_states(captions, 12, rows)
    ids, direct_mask = encoder.tokenize(captions, 12)
    with torch.no_grad():
        direct = encoder.token_states(ids, direct_mask, rows)
    assert torch.equal(mask, direct_mask)
    torch.testing.assert_close(cached, direct)
    again, _ = encoder.cached_token_states(captions, 12, rows)
    assert torch.equal(again, cached)


def test_other_text_encoders_are_refused():
    check_encoder_name(ENCODER_NAME, "config")
    with pytest.raises(TextEncoderError, match="openai/clip"):
        check_encoder_name("openai/clip-vit-large-patch14", "config")
    with pytest.raises(TextEncoderError, match="distinct"):
        MiniLM(new_tokens=("Bo", "bo"))
