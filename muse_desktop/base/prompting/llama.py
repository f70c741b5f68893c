"""The prompt contract's tokenizer adapter over llama.cpp's own tokenizer (used by the chat
engine and by the converters' quality check).

Takes an already loaded ``llama_cpp.Llama``, so importing this module imports nothing
heavy. It lives with the contract (the ground floor) so that ``converters`` can use it
without importing the chat engine, which sits above them.
"""

from __future__ import annotations


class LlamaCppTokenizer:
    """:class:`~muse_desktop.base.prompting.contract.TokenizerLike` over llama.cpp's tokenizer."""

    def __init__(self, llm):
        self.llm = llm
        self.bos_id = llm.token_bos()
        self.add_bos = bool(_vocab_flag(llm, "llama_vocab_get_add_bos", True))

    def special_id(self, token: str) -> int:
        ids = self.llm.tokenize(token.encode("utf-8"), add_bos=False, special=True)
        if len(ids) != 1:
            raise KeyError(token)
        return ids[0]

    def encode_text(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def _vocab_flag(llm, name: str, default):
    import llama_cpp

    function = getattr(llama_cpp, name, None)
    if function is None:
        return default
    return function(llama_cpp.llama_model_get_vocab(llm.model))
