"""The text tokenizer of the token models: character-level BPE (HF `tokenizers`), padded and truncated to a
fixed length.

Three ways in: `TextTokenizer.train(captions, vocab_size)` learns a BPE on a data set's captions;
`TextTokenizer.from_charbpe(vocab, merges)` loads minDALL-E's `bpe-16k-vocab.json` + `bpe-16k-merges.txt`
exactly as minDALL-E builds its tokenizer (CharBPETokenizer, unk '[UNK]', lowercase, '[PAD]' added as a
special token, padding and truncation to 64). Both use words ending in '</w>'. `TextTokenizer.words(captions)`
makes a word-level vocabulary, the same for the same captions (the BPE trainer numbers its tokens in hash order,
so two trainings differ), for models that rebuild their tokenizer when a run resumes. A folder holds one
`tokenizer.json` (padding length included).

New character names become single tokens with `add_tokens(names)`; the model's text embeddings are then
resized with `Dalle.resize_text_embeddings(tokenizer.vocab_size)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, CharBPETokenizer, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from storyviz.files import atomic_dir

PAD = "[PAD]"
UNK = "[UNK]"
SUFFIX = "</w>"
FILE_NAME = "tokenizer.json"


class TokenizerError(ValueError):
    """A tokenizer file or argument that is not what was expected."""


@dataclass
class EncodedText:
    """ids (B, T) int64 padded with pad_id; `truncated` lists the indices of captions that were cut to T."""

    ids: torch.Tensor
    truncated: list[int]


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer` whose padding and truncation are set to a fixed length."""

    def __init__(self, tokenizer: Tokenizer):
        padding = tokenizer.padding
        if not padding or not padding.get("length") or not tokenizer.truncation:
            raise TokenizerError("the tokenizer needs fixed-length padding and truncation (enable_padding(length=T))")
        self.tokenizer = tokenizer
        self.length: int = padding["length"]
        self.pad_id: int = padding["pad_id"]

    # --- construction ---------------------------------------------------------------------------------------

    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int, length: int = 64, min_frequency: int = 1) -> TextTokenizer:
        """Learns a lowercase character BPE of `vocab_size` tokens on `captions`; [PAD] is id 0, [UNK] id 1."""
        if vocab_size < 3:
            raise TokenizerError(f"vocab_size {vocab_size}: expected at least 3 (two special tokens and one more)")
        bpe = CharBPETokenizer(unk_token=UNK, lowercase=True)
        bpe.train_from_iterator(
            iter(captions), vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK],
            show_progress=False,
        )  # fmt: skip
        return cls._fixed_length(bpe, length)

    @classmethod
    def words(cls, captions: Iterable[str], length: int = 64, min_count: int = 1) -> TextTokenizer:
        """A lowercase word-level vocabulary of the words seen at least `min_count` times ([PAD] id 0, [UNK] id 1,
        then the words by decreasing count, ties alphabetically); punctuation marks are words of their own."""
        splitter = Tokenizer(WordLevel({PAD: 0, UNK: 1}, unk_token=UNK))
        splitter.normalizer = normalizers.Lowercase()
        splitter.pre_tokenizer = pre_tokenizers.Whitespace()
        counts: dict[str, int] = {}
        for caption in captions:
            for word, _ in splitter.pre_tokenizer.pre_tokenize_str(splitter.normalizer.normalize_str(caption)):
                counts[word] = counts.get(word, 0) + 1
        kept = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
        vocab = {PAD: 0, UNK: 1} | {word: index + 2 for index, word in enumerate(kept)}
        tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.add_special_tokens([PAD, UNK])
        if length < 1:
            raise TokenizerError(f"length {length}: expected a positive number of text tokens")
        tokenizer.enable_padding(length=length, pad_id=0, pad_token=PAD)
        tokenizer.enable_truncation(max_length=length)
        return cls(tokenizer)

    @classmethod
    def from_charbpe(cls, vocab_path: str | Path, merges_path: str | Path, length: int = 64) -> TextTokenizer:
        """minDALL-E's tokenizer from its vocab (JSON) and merges (text) files."""
        for path in (vocab_path, merges_path):
            if not Path(path).is_file():
                raise TokenizerError(f"{path}: tokenizer file not found")
        try:
            bpe = CharBPETokenizer(str(vocab_path), str(merges_path), unk_token=UNK, lowercase=True)
        except Exception as error:  # tokenizers raises its own Exception type for malformed files
            raise TokenizerError(f"{vocab_path}, {merges_path}: not a CharBPE vocab/merges pair ({error})") from None
        bpe.add_special_tokens([PAD])
        return cls._fixed_length(bpe, length)

    @classmethod
    def _fixed_length(cls, bpe: CharBPETokenizer, length: int) -> TextTokenizer:
        if length < 1:
            raise TokenizerError(f"length {length}: expected a positive number of text tokens")
        bpe.enable_padding(length=length, pad_id=bpe.token_to_id(PAD), pad_token=PAD)
        bpe.enable_truncation(max_length=length)
        return cls(bpe._tokenizer)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TextTokenizer:
        path = Path(directory) / FILE_NAME
        if not path.is_file():
            raise TokenizerError(f"{path}: missing; a storyviz text tokenizer folder holds {FILE_NAME}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:
            raise TokenizerError(f"{path}: not a readable tokenizers file ({error})") from None
        return cls(tokenizer)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.tokenizer.save(str(tmp / FILE_NAME))
        return directory

    # --- use ------------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the size the model's text embeddings need)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, captions: str | list[str]) -> EncodedText:
        """captions (B strings, or one) -> EncodedText(ids (B, length) int64, indices of truncated captions)."""
        if isinstance(captions, str):
            captions = [captions]
        encodings = self.tokenizer.encode_batch(list(captions))
        ids = torch.tensor([encoding.ids for encoding in encodings], dtype=torch.long).reshape(len(encodings), -1)
        return EncodedText(ids, [i for i, encoding in enumerate(encodings) if encoding.overflowing])

    def decode(self, ids: torch.Tensor | list[list[int]]) -> list[str]:
        """ids (B, T) or (T,) -> B captions (lowercase, special tokens dropped)."""
        ids = torch.as_tensor(ids)
        rows = ids.reshape(-1, ids.shape[-1]).tolist()
        if isinstance(self.tokenizer.model, WordLevel):
            return [self.tokenizer.decode(row) for row in rows]
        added = self.tokenizer.get_added_tokens_decoder()
        specials = {index for index, token in added.items() if token.special}
        names = {index for index, token in added.items() if not token.special}
        texts = []
        for row in rows:
            pieces = []
            for index in row:
                if index in specials:
                    continue
                token = self.tokenizer.id_to_token(index)
                if token is None:
                    raise TokenizerError(f"token id {index} is outside the vocabulary of {self.vocab_size}")
                pieces.append(token + SUFFIX if index in names else token)
            texts.append("".join(pieces).replace(SUFFIX, " ").strip())
        return texts

    def add_tokens(self, names: Iterable[str]) -> list[int]:
        """Makes each name (a character, say) one token; returns the id of each name (an existing whole-word token
        is reused). Afterwards resize the model: `model.resize_text_embeddings(tokenizer.vocab_size)`."""
        ids = []
        for name in names:
            word = name.strip().lower()
            if not word or any(character.isspace() for character in word):
                raise TokenizerError(f"token name {name!r}: expected one word")
            existing = self.tokenizer.token_to_id(word + SUFFIX)
            if existing is None:
                existing = self.tokenizer.token_to_id(word)
            if existing is None:
                self.tokenizer.add_tokens([AddedToken(word, single_word=True, normalized=True)])
                existing = self.tokenizer.token_to_id(word)
            ids.append(existing)
        return ids
