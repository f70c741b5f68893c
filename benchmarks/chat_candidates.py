#!/usr/bin/env python3
"""Four candidates in one llama.cpp batch vs one answer vs four one after another (issue 18).

    python benchmarks/chat_candidates.py MODEL.gguf [--threads 2] [--tokens 64] [--rounds 3]

(1) wall time, prompt included, of: one answer (ChatEngine.generate), the "Choose from 4"
    grid written together (generate_batch), and the same four written one after another;
    every answer is held to exactly ``--tokens`` tokens (stops forbidden) so the sides do
    the same work; the three are interleaved in every round so contention hits all alike;
(2) greedy batched candidates vs generate() token by token over several questions:
    how many diverge, at which step, and how far apart the two picks were in the
    sequential logits (0: an exact tie);
(3) how much the last prompt token's logits move with the shape of the batch that
    computed them, next to the chat's own prefix-then-rest split as the anchor.
Both sides use the saved instruction prefix as the app does (``--no-saved-prefix``: not).
``--rounds 0`` runs only (2) and (3), which are arithmetic, not timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chat_decode import no_stop  # noqa: E402  (beside this script: forbid the stop tokens)
from muse_desktop.chat.engine import ChatEngine, EngineSettings, Request, Sampling  # noqa: E402
from muse_desktop.evaluation.preferences import DEFAULT_GRID, Framing  # noqa: E402
from muse_desktop.base.prompting import Turn  # noqa: E402

QUESTIONS = ["Why is a balanced diet important?", "How do I keep my garden green in summer?",
             "What is a good way to remember names?", "Why does the moon change shape?",
             "How can I sleep better at night?", "What should I pack for a day trip?",
             "How do birds know where to fly in winter?", "Why is walking good for me?"]


def grid_requests(turns, tokens: int, forbid: dict[int, float]) -> list[Request]:
    """The research grid as the Choose-from-4 page asks for it, each held to ``tokens``."""
    out = []
    for i, spec in enumerate(DEFAULT_GRID):
        sampling = Sampling(temperature=spec.temperature, top_p=0.9, repeat_penalty=1.1, max_new_tokens=tokens,
                            seed=100 + i)
        out.append(Request("Elderly" if spec.framing == Framing.MUSE else None, turns, None, sampling, forbid))
    return out


def one_answer(engine: ChatEngine, request: Request) -> float:
    engine.llm.reset()  # as the first answer to a new question: the prompt is evaluated
    start = time.perf_counter()
    done = list(engine.generate(request.user_type, request.turns, None, request.sampling,
                                logits_processor=no_stop(engine.stop_ids)))[-1]
    assert len(done.data["token_ids"]) == request.sampling.max_new_tokens
    return time.perf_counter() - start


def batched(engine: ChatEngine, requests: list[Request]) -> float:
    start = time.perf_counter()
    done = list(engine.generate_batch(requests))[-1]
    assert all(len(c["token_ids"]) == r.sampling.max_new_tokens for c, r in zip(done.data["candidates"], requests, strict=True))
    return time.perf_counter() - start


def greedy_flips(engine: ChatEngine, tokens: int, questions: int) -> tuple[int, list[tuple[int, float]]]:
    """Greedy batched vs sequential: per diverging sequence, the step and how far apart the two picks were.

    The distance is the sequential logits' lead of its own pick over the batch's pick:
    0 means an exact tie (e.g. a checkpoint whose output rows repeat), which any change
    in summation order may break either way.
    """
    import numpy as np

    greedy = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=tokens)
    compared, diverged = 0, []
    for question in QUESTIONS[:questions]:
        turns = [Turn("user", question)]
        requests = [Request(user_type, turns, None, greedy) for user_type in ("Elderly", None, "Elderly", "Child")]
        got = [c["token_ids"] for c in list(engine.generate_batch(requests))[-1].data["candidates"]]
        for request, ids in zip(requests, got, strict=True):
            engine.llm.reset()
            steps = []

            def record(_ids, scores, steps=steps):
                steps.append(np.array(scores, dtype=np.float64))
                return scores

            expected = list(engine.generate(request.user_type, turns, None, greedy,
                                            logits_processor=record))[-1].data["token_ids"]
            compared += 1
            if ids != expected:
                step = next((i for i, (a, b) in enumerate(zip(ids, expected, strict=False)) if a != b), min(len(ids), len(expected)))
                lead = float(steps[step][expected[step]] - steps[step][ids[step]]) if step < min(len(ids), len(expected)) \
                    else float("nan")
                diverged.append((step, lead))
    return compared, diverged


def logit_noise(engine: ChatEngine) -> dict[str, tuple[float, float]]:
    """How much the last prompt token's logits move with the shape of the batch that computed them.

    Anchor: the same prompt through the chat's own context, whole against split where
    the saved instruction prefix ends (what a restored prefix does). Compared: the
    prompt evaluated in one llama_decode together with another sequence's prompt.
    Returns (max, mean) absolute differences, and the logits' standard deviation.
    """
    import llama_cpp
    import numpy as np

    llm = engine.llm
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    turns = [Turn("user", QUESTIONS[0])]
    mine, other = engine.prompt_ids(None, turns), engine.prompt_ids("Elderly", turns)

    def chat_logits(parts):
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        for part in parts:
            llm.eval(part)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).astype(np.float64)

    whole = chat_logits([mine])
    cut = len(engine.instruction_prefix(None))
    split = chat_logits([mine[:cut], mine[cut:]])
    list(engine.generate_batch([Request(None, turns, None, Sampling(temperature=0.0, max_new_tokens=1))] * 2))
    ctx = engine._batch_ctx[0]
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    items = [(0, i, t) for i, t in enumerate(other)] + [(1, i, t) for i, t in enumerate(mine)]
    batch = llama_cpp.llama_batch_init(len(items), 0, 1)
    try:
        batch.n_tokens = len(items)
        for i, (seq, pos, token) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, i == len(items) - 1
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        together = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, len(items) - 1),
                                         shape=(n_vocab,)).astype(np.float64)
    finally:
        llama_cpp.llama_batch_free(batch)
    ties = int((whole == whole.max()).sum())
    return {"split at the prefix (chat, anchor)": (float(np.abs(split - whole).max()), float(np.abs(split - whole).mean())),
            "two prompts in one batch": (float(np.abs(together - whole).max()), float(np.abs(together - whole).mean())),
            "_std": (float(whole.std()), float(ties))}


def llama_batched(binary: Path, model: Path, threads: int, prompt: int, tokens: int, flash_attn: bool) -> dict[int, dict]:
    """llama-batched-bench's rows for 1 and 4 parallel sequences, with the weight layout and the
    attention the engine uses here (the tool's own default, ``-fa auto``, is flash attention on
    the CPU; the app runs with it off)."""
    import json
    import subprocess

    from muse_desktop.base.llamacpp import extra_buffers_safe

    command = [str(binary), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-c", "2048", "-b", "512",
               "-npp", str(prompt), "-ntg", str(tokens), "-npl", "1,4", "-pps", "--output-format", "jsonl",
               "-fa", "on" if flash_attn else "off"]
    if not extra_buffers_safe():
        command.append("--no-repack")
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in (out.stdout + out.stderr).splitlines() if line.startswith('{"n_kv_max"')]
    return {row["pl"]: row for row in rows}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flip-tokens", type=int, default=32)
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--batched-bench", type=Path, metavar="PATH",
                        help="llama.cpp's own llama-batched-bench (built from the same vendored llama.cpp, as "
                             "decode_anchor.py builds llama-bench): one and four sequences, as the anchor")
    parser.add_argument("--bench-prompt", type=int, default=64, help="prompt tokens for llama-batched-bench")
    parser.add_argument("--no-saved-prefix", action="store_true",
                        help="evaluate the instruction every time (the app keeps it as saved llama.cpp state)")
    args = parser.parse_args()
    import tempfile

    state = None if args.no_saved_prefix else tempfile.mkdtemp(prefix="muse-prefix-")
    engine = ChatEngine(args.model, EngineSettings(threads=args.threads, context_length=4096, prefix_state_dir=state))
    forbid = {t: float("-inf") for t in engine.stop_ids}
    turns = [Turn("user", "Why is a balanced diet important?")]
    requests = grid_requests(turns, args.tokens, forbid)
    ones, togethers, sequentials, anchors = [], [], [], []
    if args.rounds:
        batched(engine, requests)  # makes the batch context once, as the page's first round does
    for _ in range(args.rounds):  # interleaved, llama.cpp's own tool included
        ones.append(one_answer(engine, requests[0]))
        togethers.append(batched(engine, requests))
        sequentials.append(sum(one_answer(engine, r) for r in requests))
        if args.batched_bench:
            anchors.append(llama_batched(args.batched_bench, args.model, args.threads, args.bench_prompt,
                                         args.tokens, engine.settings.flash_attn))
    compared, diverged = greedy_flips(engine, args.flip_tokens, args.questions)
    noise = logit_noise(engine)
    engine.close()
    if args.rounds:  # --rounds 0: only the token-by-token comparison (arithmetic, not timing)
        one, together, sequential = (statistics.median(x) for x in (ones, togethers, sequentials))
        print(f"model: {args.model.name}, threads {args.threads}, {args.tokens} tokens per answer, median of {args.rounds},"
              f" instruction {'evaluated every time' if state is None else 'restored from its saved state'}")
        print("| | one answer (anchor) | four, one batch | four, one after another |")
        print("| --- | ---: | ---: | ---: |")
        print(f"| wall time, prompt included (s) | {one:.2f} | {together:.2f} | {sequential:.2f} |")
        print(f"| × one answer | 1.00 | {together / one:.2f} | {sequential / one:.2f} |")
    if anchors:
        def med(pl, key):
            return statistics.median(a[pl][key] for a in anchors)

        def four_by_one(key):  # the median of the per-round ratios
            return statistics.median(a[4][key] / a[1][key] for a in anchors)

        print(f"\nllama.cpp's llama-batched-bench, same file, threads and attention, in the same rounds, prompt "
              f"{args.bench_prompt} tokens evaluated once and shared, {args.tokens} tokens per sequence "
              f"(median of {len(anchors)}):")
        print("| | one sequence | four sequences | four × one |")
        print("| --- | ---: | ---: | ---: |")
        print(f"| wall time, prompt included (s) | {med(1, 't'):.2f} | {med(4, 't'):.2f} | "
              f"{four_by_one('t'):.2f} |")
        print(f"| decode only (s) | {med(1, 't_tg'):.2f} | {med(4, 't_tg'):.2f} | "
              f"{four_by_one('t_tg'):.2f} |")
    ties = sum(1 for _step, lead in diverged if lead == 0.0)
    print(f"\ngreedy batched vs sequential, {args.flip_tokens} tokens: {len(diverged)} of {compared} sequences diverged,"
          f" {ties} of them at an exact tie")
    for step, lead in diverged:
        print(f"  step {step}: the sequential pick led the batch's pick by {lead:.5f}")
    std, top_ties = noise.pop("_std")
    print(f"\nlast prompt token's logits (std {std:.3f}; {top_ties:.0f} token(s) share the best logit):")
    print("| computed as | max abs change | mean abs change |")
    print("| --- | ---: | ---: |")
    for name, (most, mean) in noise.items():
        print(f"| {name} | {most:.4f} | {mean:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
