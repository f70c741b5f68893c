#!/usr/bin/env python3
"""Four candidates in one llama.cpp batch vs one answer vs four one after another (issue 18).

    python benchmarks/chat_candidates.py MODEL.gguf [--threads 2] [--tokens 64] [--rounds 3]

(1) wall time, prompt included, of: one answer (ChatEngine.generate), the "Choose from 4"
    grid written together (generate_batch), and the same four written one after another;
    every answer is held to exactly ``--tokens`` tokens (stops forbidden) so the sides do
    the same work; the three are interleaved in every round so contention hits all alike;
(2) greedy batched candidates vs generate() token by token over several questions:
    how many diverge (batched arithmetic flipping a near-tie) and at which step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from muse_desktop.chat.engine import ChatEngine, EngineSettings, Request, Sampling  # noqa: E402
from muse_desktop.preferences import DEFAULT_GRID, Framing  # noqa: E402
from muse_desktop.prompting import Turn  # noqa: E402

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


def no_stop(stop_ids):
    import numpy as np

    stops = sorted(stop_ids)

    def process(_ids, scores):
        scores[stops] = -np.inf
        return scores

    return process


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
    assert all(len(c["token_ids"]) == r.sampling.max_new_tokens for c, r in zip(done.data["candidates"], requests))
    return time.perf_counter() - start


def greedy_flips(engine: ChatEngine, tokens: int, questions: int) -> tuple[int, int, list[int]]:
    greedy = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=tokens)
    compared, diverged, steps = 0, 0, []
    for question in QUESTIONS[:questions]:
        turns = [Turn("user", question)]
        requests = [Request(user_type, turns, None, greedy) for user_type in ("Elderly", None, "Elderly", "Child")]
        got = [c["token_ids"] for c in list(engine.generate_batch(requests))[-1].data["candidates"]]
        for request, ids in zip(requests, got):
            engine.llm.reset()
            expected = list(engine.generate(request.user_type, turns, None, greedy))[-1].data["token_ids"]
            compared += 1
            if ids != expected:
                diverged += 1
                steps.append(next((i for i, (a, b) in enumerate(zip(ids, expected)) if a != b),
                                  min(len(ids), len(expected))))
    return compared, diverged, steps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flip-tokens", type=int, default=32)
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    args = parser.parse_args()
    engine = ChatEngine(args.model, EngineSettings(threads=args.threads, context_length=4096))
    forbid = {t: float("-inf") for t in engine.stop_ids}
    turns = [Turn("user", "Why is a balanced diet important?")]
    requests = grid_requests(turns, args.tokens, forbid)
    batched(engine, requests)  # makes the batch context once, as the page's first round does
    ones, togethers, sequentials = [], [], []
    for _ in range(args.rounds):  # interleaved
        ones.append(one_answer(engine, requests[0]))
        togethers.append(batched(engine, requests))
        sequentials.append(sum(one_answer(engine, r) for r in requests))
    compared, diverged, steps = greedy_flips(engine, args.flip_tokens, args.questions)
    engine.close()
    one, together, sequential = (statistics.median(x) for x in (ones, togethers, sequentials))
    print(f"model: {args.model.name}, threads {args.threads}, {args.tokens} tokens per answer, median of {args.rounds}")
    print("| | one answer (anchor) | four, one batch | four, one after another |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| wall time, prompt included (s) | {one:.2f} | {together:.2f} | {sequential:.2f} |")
    print(f"| × one answer | 1.00 | {together / one:.2f} | {sequential / one:.2f} |")
    print(f"\ngreedy batched vs sequential, {args.flip_tokens} tokens: {diverged} of {compared} sequences diverged"
          + (f" (first differing step: {', '.join(map(str, steps))})" if steps else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
