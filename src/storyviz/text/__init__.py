"""Text tokenizers of the token models."""

from storyviz.text.bpe import EncodedText, TextTokenizer, TokenizerError

__all__ = ["EncodedText", "TextTokenizer", "TokenizerError"]
