#!/usr/bin/env python3
"""Long conversations: flash attention and a q8_0 key/value cache on this CPU.

    python benchmarks/long_context.py MODEL.gguf [--threads 2] [--tokens 4096] [--decode 16]

For each setting (plain attention with an F16 cache, the anchor; flash attention with
an F16 cache; flash attention with a q8_0 cache) a fresh ChatEngine evaluates the same
``--tokens`` of text (a conversation-like text repeated) and reports, at half the
length and at the full length: the prompt rate over that stretch, the decode rate of
``--decode`` greedy tokens after it, the key/value cache's size, and how far the last
token's logits moved from the anchor's (max and mean absolute change, and whether the
best token is the same). The settings run one after another in one process, so read
the ratios against the anchor, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from muse_desktop.chat.engine import ChatEngine, EngineSettings, ModelError  # noqa: E402

TEXT = ("My grandson asked me how the moon changes shape, and I did not know what to say. "
        "Could you explain it in simple words, and then tell me what I should eat to keep my bones strong? "
        "I am seventy-six and I like to walk in the park every morning with my neighbour. ")
SETTINGS = {"plain attention, F16 cache (anchor)": {},
            "flash attention, F16 cache": {"flash_attn": True},
            "flash attention, q8_0 cache": {"flash_attn": True, "kv_cache": "q8_0"}}


def measure(model: Path, threads: int, tokens: int, decode: int, kwargs: dict) -> dict:
    import llama_cpp
    import numpy as np

    engine = ChatEngine(model, EngineSettings(threads=threads, context_length=tokens + decode + 64, **kwargs))
    try:
        llm = engine.llm
        ids = [llm.token_bos()]
        while len(ids) < tokens:
            ids += llm.tokenize(TEXT.encode(), add_bos=False)
        ids = ids[:tokens]
        n_vocab = llm.n_vocab()
        out = {"kv_bytes": engine.kv_cache_bytes(tokens)}
        for mark in (tokens // 2, tokens):
            start = time.perf_counter()
            llm.eval(ids[llm.n_tokens:mark])
            pp_s = time.perf_counter() - start
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                           shape=(n_vocab,)).astype(np.float64).copy()
            saved = llm.n_tokens
            start = time.perf_counter()
            for count, _token in enumerate(engine._native_tokens(ids[:mark], _greedy()), start=1):
                if count > decode:
                    break
            tg_s = time.perf_counter() - start
            llm.n_tokens = saved  # drop the decoded tokens; the next stretch follows the text
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), 0, saved, -1)
            out[mark] = {"pp": (mark - (tokens // 2 if mark == tokens else 0)) / pp_s, "tg": decode / tg_s,
                         "logits": logits}
        return out
    finally:
        engine.close()


def _greedy():
    from muse_desktop.chat.engine import Sampling

    return Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0)


def main() -> int:
    import numpy as np

    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=4000)  # + decode + 64 within a 4k context
    parser.add_argument("--decode", type=int, default=16)
    args = parser.parse_args()
    results, refused = {}, {}
    for name, kw in SETTINGS.items():
        try:
            results[name] = measure(args.model, args.threads, args.tokens, args.decode, kw)
        except ModelError as exc:  # e.g. heads narrower than a q8_0 block
            refused[name] = str(exc)
    anchor = results[next(iter(SETTINGS))]
    print(f"model: {args.model.name}, threads {args.threads}, {os.cpu_count()} CPUs, {args.tokens} tokens")
    print("| setting | at | prompt tok/s (× anchor) | decode tok/s (× anchor) | KV cache MiB | max abs logit change "
          "| mean abs change | same best token |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, row in results.items():
        for mark in (args.tokens // 2, args.tokens):
            here, base = row[mark], anchor[mark]
            change = np.abs(here["logits"] - base["logits"])
            kv = row["kv_bytes"] * mark / args.tokens / 2**20
            print(f"| {name} | {mark} | {here['pp']:.1f} ({here['pp'] / base['pp']:.2f}×) | {here['tg']:.2f} "
                  f"({here['tg'] / base['tg']:.2f}×) | {kv:.0f} | {change.max():.4f} | {change.mean():.5f} | "
                  f"{'yes' if here['logits'].argmax() == base['logits'].argmax() else 'no'} |")
    for name, reason in refused.items():
        print(f"{name}: not possible with this model ({reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
