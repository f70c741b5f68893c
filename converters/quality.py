"""How much a quantized GGUF differs from its F16 original, on the prompts the chat will see.

Both files run in llama.cpp on a fixed set of MUsE conversations (four user types,
a question and an answer each, tokenized through the prompt contract by llama.cpp's
own tokenizer, as the chat engine does). Per position: does the most likely next
token agree, and how far apart are the two next-token distributions (the KL
divergence of the quantized one from the F16 one, in nats). This is the check
llama.cpp's own ``llama-perplexity --kl-divergence`` makes, on MUsE's prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# (user type, question, answer): short, so the check takes seconds even at Phi-3-mini size.
CHECK_CONVERSATIONS = (
    ("Child", "Why is the sky blue?",
     "Sunlight has all the colours in it. Tiny bits of air bounce the blue light around the most, "
     "so when you look up, blue light comes at you from everywhere."),
    ("Elderly", "How can I keep my bones strong?",
     "Walking every day, food with calcium such as milk, cheese or green vegetables, and a little sunshine "
     "for vitamin D all help. Ask your doctor whether a bone density check is right for you."),
    ("Nurse", "What is the difference between type 1 and type 2 diabetes?",
     "In type 1 the pancreas makes little or no insulin, so patients need insulin from diagnosis; "
     "in type 2 the body resists insulin, and diet, exercise and tablets often come first."),
    ("Farmer", "Why do people rotate crops?",
     "Growing a different crop on a field each year keeps pests and diseases from building up "
     "and lets plants like beans put nitrogen back into the soil for the next crop."),
)


@dataclass
class QuantReport:
    qtype: str
    n_tokens: int
    top1_agreement: float  # fraction of positions whose most likely token is the same
    mean_kl: float  # mean KL(F16 || quantized) per position, in nats
    max_kl: float
    reference: str = "F16"

    def summary(self) -> str:
        return (f"{self.qtype} against {self.reference} on {self.n_tokens} tokens of MUsE prompts: top-1 agreement "
                f"{100 * self.top1_agreement:.1f}%, mean KL divergence {self.mean_kl:.4f} (max {self.max_kl:.3f})")

    def to_dict(self) -> dict:
        return asdict(self)


def check_ids(gguf_path: str | Path, conversations=CHECK_CONVERSATIONS) -> list[list[int]]:
    """The check's token ids, through the prompt contract and llama.cpp's tokenizer."""
    from llama_cpp import Llama

    from muse_desktop.base.prompting import Turn, build_pieces, encode
    from muse_desktop.base.prompting.llama import LlamaCppTokenizer

    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    try:
        tokenizer = LlamaCppTokenizer(llm)
        return [
            encode(build_pieces(user_type, [Turn("user", question), Turn("assistant", answer)]), tokenizer).input_ids
            for user_type, question, answer in conversations
        ]
    finally:
        llm.close()


def _all_logits(gguf_path: str | Path, sequences: Sequence[Sequence[int]], lora_path=None,
                threads: int | None = None, cancel=None) -> list[np.ndarray]:
    from converters.verify import check_context, llama_logits_many

    n_ctx = max(check_context(gguf_path, ids) for ids in sequences)
    return llama_logits_many(gguf_path, sequences, lora_path=lora_path, n_ctx=n_ctx, threads=threads, cancel=cancel)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compare_distributions(reference: np.ndarray, other: np.ndarray) -> tuple[float, np.ndarray]:
    """(top-1 agreement, KL(reference || other) per position) of two [positions, vocab] logit arrays."""
    log_p, log_q = _log_softmax(reference), _log_softmax(other)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    agree = float((reference.argmax(-1) == other.argmax(-1)).mean())
    return agree, np.maximum(kl, 0.0)


def compare_quantized(f16_path: str | Path, quant_path: str | Path, qtype: str, lora_path: str | Path | None = None,
                      threads: int | None = None, reference: str = "F16", cancel=None) -> QuantReport:
    """Run both files (each with ``lora_path`` applied, if given) on the check prompts and compare."""
    sequences = check_ids(f16_path)
    original = np.concatenate(_all_logits(f16_path, sequences, lora_path, threads, cancel))
    quantized = np.concatenate(_all_logits(quant_path, sequences, lora_path, threads, cancel))
    agree, kl = compare_distributions(original, quantized)
    return QuantReport(qtype.upper(), int(original.shape[0]), agree, float(kl.mean()), float(kl.max()), reference)
