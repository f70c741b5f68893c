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


# The one pass rule, used by `convert --verify`, the Trainer's export and Get MUsE:
# llama.cpp's logits on the file must be within the file type's rounding of
# transformers' float32 logits, measured as max |llama - hf| / max |hf|. The bars are
# what storing the weights in that type costs on the test models, with room to spare;
# a wrong tensor, a dropped adapter or missing rope factors cost 1e-2 and more.
# Top-1 agreement is reported, not required on its own: within the bar two tokens can
# only swap places where their logits are tied to within twice the bar, and F16
# rounding does swap such near-ties now and then (a real error changes far more).
TOLERANCES = {"f32": 1e-3, "f16": 1e-2, "bf16": 2e-2, "q8_0": 5e-2}
# general.file_type -> the type name above.
_FILE_TYPES = {0: "f32", 1: "f16", 32: "bf16", 7: "q8_0"}


@dataclass
class VerifyReport:
    n_tokens: int
    rel_error: float  # max |llama - hf| / max |hf|
    top1_agreement: float  # fraction of positions whose argmax agrees
    tolerance: float | None = None  # the bar for the file's type, when known

    def passed(self, tolerance: float | None = None) -> bool:
        bar = tolerance if tolerance is not None else self.tolerance
        if bar is None:
            raise ValueError("no bar: give the tolerance or verify a file of a known type")
        return self.rel_error < bar

    def summary(self) -> str:
        bar = f" (bar {self.tolerance:g})" if self.tolerance is not None else ""
        return (
            f"{self.n_tokens} tokens: relative logit error {self.rel_error:.2e}{bar}, "
            f"top-1 agreement {100 * self.top1_agreement:.1f}%"
        )


def tolerance_for(gguf_path: str | Path) -> float | None:
    """The pass bar for a GGUF, from its general.file_type (None for types not checked this way)."""
    from converters.gguf_check import inspect_gguf

    name = _FILE_TYPES.get(inspect_gguf(gguf_path).file_type)
    return TOLERANCES.get(name) if name else None


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

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True)
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
    return llama_logits_many(gguf_path, [token_ids], lora_path, n_ctx, threads)[0]


def llama_logits_many(
    gguf_path: str | Path,
    sequences: Sequence[Sequence[int]],
    lora_path: str | Path | None = None,
    n_ctx: int | None = None,
    threads: int | None = None,
    cancel=None,
) -> list[np.ndarray]:
    """Logits of llama.cpp for every position of each sequence, each evaluated from an empty cache.

    The model is loaded once for all of them (seconds at Phi-3-mini size).
    """
    from muse_desktop.base.llamacpp import open_llama

    longest = max(len(ids) for ids in sequences)
    llm = open_llama(
        model_path=str(gguf_path),
        n_ctx=n_ctx or max(64, longest),
        n_batch=max(64, longest),
        logits_all=True,
        # An F32 KV cache: the default F16 cache alone adds ~1e-4 of error.
        type_k=0,
        type_v=0,
        lora_path=str(lora_path) if lora_path else None,
        n_threads=threads or max(1, (os.cpu_count() or 2)),
        verbose=False,
    )
    try:
        results = []
        for ids in sequences:
            if cancel is not None:
                cancel.check()
            llm.reset()
            llm.eval(list(ids))
            results.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
        return results
    finally:
        llm.close()


def default_token_ids(model_dir: str | Path, max_tokens: int = 200) -> list[int]:
    """A MUsE prompt with an answer, tokenized through the prompt contract."""
    from transformers import AutoTokenizer

    from muse_desktop.base.prompting import Turn, build_pieces, encode
    from muse_desktop.base.prompting.hf import HFTokenizer

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
    cancel=None,
) -> VerifyReport:
    """Compare llama.cpp on the GGUF (+ GGUF LoRA) with transformers on the checkpoint (+ adapter).

    The transformers side runs in a child process, one layer in memory at a time
    (:mod:`converters.reference`), so a Phi-3-mini check fits a 16 GB laptop.
    """
    from converters.reference import reference_logits

    ids = list(token_ids) if token_ids is not None else default_token_ids(model_dir)
    reference = reference_logits(model_dir, ids, adapter_dir, cancel=cancel)
    theirs = llama_logits_many(gguf_path, [ids], gguf_lora, n_ctx=check_context(gguf_path, ids), cancel=cancel)[0]
    report = compare_logits(reference, theirs)
    report.tolerance = tolerance_for(gguf_path)
    return report


def check_context(gguf_path: str | Path, ids: Sequence[int]) -> int:
    """A context no larger than a LongRoPE model's original one, as transformers uses for short sequences.

    llama.cpp picks the long rope factors for every token when its context is larger
    than the original context; transformers picks by sequence length.
    """
    import gguf

    reader = gguf.GGUFReader(gguf_path, "r")
    field = reader.get_field("phi3.rope.scaling.original_context_length")
    n_ctx = max(64, len(ids))
    if field is not None:
        original = int(field.contents())
        if len(ids) > original:
            raise ConversionError(f"The check needs at most {original} tokens for this model, not {len(ids)}.")
        n_ctx = min(n_ctx, original)
    return n_ctx
