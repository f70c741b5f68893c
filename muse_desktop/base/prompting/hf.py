"""The prompt contract's tokenizer adapter for Hugging Face tokenizers (used by the trainer).

Takes an already loaded tokenizer object, so importing this module imports nothing
heavy.
"""

from __future__ import annotations

from typing import Any


class HFTokenizer:
    """:class:`~muse_desktop.base.prompting.contract.TokenizerLike` over a transformers tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.bos_token_id
        # Ask the tokenizer what it does rather than trusting a flag whose meaning
        # changed between transformers versions.
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.add_bos = self.bos_id is not None and bool(probe) and probe[0] == self.bos_id

    def special_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == self.tokenizer.unk_token_id and token != self.tokenizer.unk_token):
            raise KeyError(token)
        return int(token_id)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
