"""TextTokenizer: training on captions, minDALL-E's CharBPE files, padding/truncation, added names, save/load."""

import json

import pytest
import torch
from tokenizers import CharBPETokenizer

from storyviz.models.dalle import PRESETS, Dalle
from storyviz.text import TextTokenizer, TokenizerError

CAPTIONS = [
    "Pororo plays with Crong in the snow.",
    "Crong and Pororo build a snowman in the forest.",
    "Loopy cooks a cake for Pororo and Crong.",
    "Eddy shows his new machine to Loopy.",
] * 5


def write_charbpe(directory):
    """A tiny vocab/merges pair in the format of minDALL-E's bpe-16k files (words end in '</w>')."""
    letters = sorted(set("abcdefghijklmnopqrstuvwxyz.,"))
    vocab = {"[UNK]": 0}
    for letter in letters:
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("o", "n</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    (directory / "bpe-16k-vocab.json").write_text(json.dumps(vocab))
    (directory / "bpe-16k-merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory / "bpe-16k-vocab.json", directory / "bpe-16k-merges.txt", vocab


def test_charbpe_files_load_like_mindalle(tmp_path):
    vocab_path, merges_path, vocab = write_charbpe(tmp_path)
    tokenizer = TextTokenizer.from_charbpe(vocab_path, merges_path, length=6)
    assert tokenizer.length == 6
    assert tokenizer.pad_id == len(vocab)  # [PAD] added after the vocabulary, as minDALL-E does
    encoded = tokenizer.encode(["The CAT on", "the cat on the cat on the"])
    the, cat, on = vocab["the</w>"], vocab["cat</w>"], vocab["on</w>"]
    pad = tokenizer.pad_id
    assert encoded.ids.dtype == torch.int64
    assert encoded.ids.tolist() == [[the, cat, on, pad, pad, pad], [the, cat, on, the, cat, on]]
    assert encoded.truncated == [1]
    assert tokenizer.encode("x").ids.shape == (1, 6)
    assert tokenizer.decode(encoded.ids) == ["the cat on", "the cat on the cat on"]
    # the same ids as the tokenizer minDALL-E builds by hand
    reference = CharBPETokenizer(str(vocab_path), str(merges_path), unk_token="[UNK]", lowercase=True)
    reference.add_special_tokens(["[PAD]"])
    reference.enable_padding(length=6, pad_id=reference.token_to_id("[PAD]"))
    reference.enable_truncation(max_length=6)
    for caption in ["The cat on the mat", "ÉTÉ, the cat!", ""]:
        assert tokenizer.encode(caption).ids[0].tolist() == reference.encode(caption).ids
    with pytest.raises(TokenizerError, match="merges.txt: tokenizer file not found"):
        TextTokenizer.from_charbpe(vocab_path, tmp_path / "merges.txt")


def test_train_encode_decode_and_save_load(tmp_path):
    tokenizer = TextTokenizer.train(CAPTIONS, vocab_size=120, length=12)
    assert tokenizer.pad_id == 0 and tokenizer.vocab_size <= 120
    encoded = tokenizer.encode(CAPTIONS[:4])
    assert encoded.ids.shape == (4, 12)
    assert encoded.truncated == []
    assert tokenizer.decode(encoded.ids) == [caption.lower().replace(".", " .") for caption in CAPTIONS[:4]]
    assert (encoded.ids[0] == 0).sum() > 0  # padded
    long = tokenizer.encode(" ".join(CAPTIONS[:3]))
    assert long.truncated == [0] and long.ids.shape == (1, 12)
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = TextTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.length == 12 and loaded.vocab_size == tokenizer.vocab_size
    assert torch.equal(loaded.encode(CAPTIONS[:4]).ids, encoded.ids)
    with pytest.raises(TokenizerError, match="tokenizer.json: missing"):
        TextTokenizer.from_pretrained(tmp_path)


def test_added_names_are_single_tokens_and_embeddings_resize():
    tokenizer = TextTokenizer.train(CAPTIONS, vocab_size=80, length=10)
    before = tokenizer.vocab_size
    assert len(tokenizer.encode("Harry meets pororo").ids[0].nonzero()) > 3
    ids = tokenizer.add_tokens(["Harry", "Poby"])
    assert ids == [before, before + 1] and tokenizer.vocab_size == before + 2
    encoded = tokenizer.encode(["Harry meets Poby", "harryville"]).ids
    assert encoded[0, 0] == ids[0] and ids[1] in encoded[0].tolist()
    assert ids[0] not in encoded[1].tolist()  # a name only matches a whole word
    assert tokenizer.decode(encoded[:1]) == ["harry meets poby"]
    assert tokenizer.add_tokens(["harry"]) == [ids[0]]  # already there: reused
    with pytest.raises(TokenizerError, match="one word"):
        tokenizer.add_tokens(["two words"])

    config = PRESETS["tiny"].replace(text_vocab_size=before, text_len=10)
    model = Dalle(config)
    model.resize_text_embeddings(tokenizer.vocab_size)
    text_logits, _ = model(encoded, torch.zeros(2, config.image_len, dtype=torch.long))
    assert text_logits.shape == (2, 9, tokenizer.vocab_size)
