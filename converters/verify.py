"""Check a GGUF against its Hugging Face source by logits (needs the ``[train]`` extra).

The same token ids go through transformers (base, plus a PEFT adapter merged the
way PEFT merges it) and through llama.cpp (the GGUF, plus GGUF LoRA adapters);
the report gives the relative logit error and how often the top token agrees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import ConversionError


@dataclass
class VerifyReport:
    n_tokens: int
    rel_error: float  # max |llama - hf| / max |hf|
    top1_agreement: float  # fraction of positions whose argmax agrees

    def passed(self, tolerance: float) -> bool:
        return self.rel_error < tolerance and self.top1_agreement == 1.0

    def summary(self) -> str:
        return (
            f"{self.n_tokens} tokens: relative logit error {self.rel_error:.2e}, "
            f"top-1 agreement {100 * self.top1_agreement:.1f}%"
        )


def compare_logits(reference: np.ndarray, other: np.ndarray) -> VerifyReport:
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise ConversionError(f"Logit shapes differ: {reference.shape} vs {other.shape}.")
    rel = float(np.abs(other - reference).max() / np.abs(reference).max())
    agree = float((other.argmax(-1) == reference.argmax(-1)).mean())
    return VerifyReport(reference.shape[0], rel, agree)


def hf_logits(model_dir: str | Path, token_ids: Sequence[int], adapter_dir: str | Path | None = None) -> np.ndarray:
    """Logits of transformers in float32 (the adapter merged by PEFT's merge_and_unload)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([list(token_ids)])).logits[0]
    return logits.float().numpy()


def llama_logits(
    gguf_path: str | Path,
    token_ids: Sequence[int],
    lora_path: str | Path | None = None,
    n_ctx: int | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Logits of llama.cpp for every position."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf_path),
        n_ctx=n_ctx or max(64, len(token_ids)),
        n_batch=max(64, len(token_ids)),
        logits_all=True,
        # An F32 KV cache: the default F16 cache alone adds ~1e-4 of error.
        type_k=0,
        type_v=0,
        lora_path=str(lora_path) if lora_path else None,
        n_threads=threads or max(1, (os.cpu_count() or 2)),
        verbose=False,
    )
    try:
        llm.eval(list(token_ids))
        return np.array(llm.scores[: len(token_ids)], dtype=np.float32)
    finally:
        llm.close()


def default_token_ids(model_dir: str | Path, max_tokens: int = 200) -> list[int]:
    """A MUsE prompt with an answer, tokenized through the prompt contract."""
    from transformers import AutoTokenizer

    from muse_desktop.prompting import Turn, build_pieces, encode
    from muse_desktop.prompting.hf import HFTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    turns = [
        Turn("user", "Why is a balanced diet important?"),
        Turn("assistant", "A balanced diet gives your body the energy, vitamins and minerals it needs."),
    ]
    return encode(build_pieces("Elderly", turns), HFTokenizer(tokenizer)).input_ids[:max_tokens]


def verify(
    model_dir: str | Path,
    gguf_path: str | Path,
    adapter_dir: str | Path | None = None,
    gguf_lora: str | Path | None = None,
    token_ids: Sequence[int] | None = None,
) -> VerifyReport:
    """Compare llama.cpp on the GGUF (+ GGUF LoRA) with transformers on the checkpoint (+ adapter)."""
    ids = list(token_ids) if token_ids is not None else default_token_ids(model_dir)
    return compare_logits(hf_logits(model_dir, ids, adapter_dir), llama_logits(gguf_path, ids, gguf_lora))
