#!/usr/bin/env python3
"""Chat speed through the app's engine, side by side with raw llama.cpp.

    python benchmarks/chat_decode.py MODEL.gguf [--threads 2] [--tokens 64]

(1) decode tokens/s: raw llama-cpp-python `Llama.generate` vs `ChatEngine.generate`,
    same GGUF, threads, context and greedy sampling, same number of tokens;
(2) prompt processing tokens/s (raw llama.cpp, 256 tokens);
(3) time to first token of a later turn as the conversation grows, with the
    engine's prefix reuse, and with the cache thrown away (what a naive app does);
(4) a 20-turn conversation through the engine: TTFT of turn 20 vs turn 1;
(5) model load time, and cold start of the window to interactive (fresh process).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from muse_desktop.chat.engine import ChatEngine, EngineSettings, Sampling  # noqa: E402
from muse_desktop.base.prompting import Turn  # noqa: E402


def no_stop(stop_ids):
    import numpy as np

    stops = sorted(stop_ids)

    def process(_ids, scores):
        scores[stops] = -np.inf
        return scores

    return process


def raw_decode(engine: ChatEngine, ids: list[int], n: int) -> float:
    from llama_cpp import LogitsProcessorList

    llm = engine.llm
    llm.reset()
    processors = LogitsProcessorList([no_stop(engine.stop_ids)])
    count, first = 0, None
    for _ in llm.generate(ids, temp=0.0, top_p=1.0, repeat_penalty=1.0, logits_processor=processors):
        count += 1
        if first is None:
            first = time.perf_counter()
        if count == n + 1:
            break
    return n / (time.perf_counter() - first)


def engine_decode(engine: ChatEngine, turns, n: int) -> float:
    engine.llm.reset()
    sampling = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=n + 1)
    done = list(engine.generate("Elderly", turns, sampling=sampling, logits_processor=no_stop(engine.stop_ids)))[-1]
    assert len(done.data["token_ids"]) == n + 1
    return done.data["tokens_per_s"]


def prompt_rate(engine: ChatEngine, n: int = 256) -> float:
    llm = engine.llm
    llm.reset()
    ids = [engine.llm.token_bos()] + list(range(1000, 1000 + n - 1))
    start = time.perf_counter()
    llm.eval(ids)
    return n / (time.perf_counter() - start)


def ttft_series(engine: ChatEngine, lengths, reuse: bool) -> list[tuple[int, float]]:
    results = []
    for exchanges in lengths:
        turns = []
        for i in range(exchanges):
            turns += [Turn("user", f"Question {i}: tell me something about gardens and the weather today."),
                      Turn("assistant", "Gardens like rain in spring and sun in summer; water them in the morning. " * 3)]
        turns.append(Turn("user", "And what about winter?"))
        sampling = Sampling(temperature=0.0, max_new_tokens=1)
        list(engine.generate("Elderly", turns, sampling=sampling))  # the earlier turns were seen before
        turns += [Turn("assistant", "Winter is quiet."), Turn("user", "Thanks, and roses?")]
        if not reuse:
            engine.llm.reset()
        done = list(engine.generate("Elderly", turns, sampling=sampling))[-1]
        results.append((done.data["prompt_tokens"], done.data["time_to_first_token_s"]))
    return results


def conversation_ttft(engine: ChatEngine, turns_wanted: int = 20, answer_tokens: int = 24) -> list[float]:
    engine.llm.reset()
    turns: list[Turn] = []
    ttfts = []
    sampling = Sampling(temperature=0.7, max_new_tokens=answer_tokens, seed=1)
    for i in range(turns_wanted):
        turns.append(Turn("user", f"Question {i + 1}: what should I know about my garden this week?"))
        done = list(engine.generate("Elderly", turns, sampling=sampling, logits_processor=no_stop(engine.stop_ids)))[-1]
        ttfts.append(done.data["time_to_first_token_s"])
        turns.append(Turn("assistant", done.data["text"]))
    return ttfts


def load_time(model: Path, threads: int) -> float:
    start = time.perf_counter()
    ChatEngine(model, EngineSettings(threads=threads, context_length=4096)).close()
    return time.perf_counter() - start


COLD_START = """
import time
start = time.perf_counter()
from PySide6.QtWidgets import QApplication
app = QApplication([])
from muse_desktop.ui.app import MainWindow
window = MainWindow()
window.show()
app.processEvents()
print(time.perf_counter() - start)
"""


def cold_start() -> float:
    import os
    import subprocess
    import tempfile

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MUSE_HOME=tempfile.mkdtemp())
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD_START], capture_output=True, text=True, env=env, check=True)
    total = time.perf_counter() - start
    return total if out.stdout.strip() else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    engine = ChatEngine(args.model, EngineSettings(threads=args.threads, context_length=4096))
    turns = [Turn("user", "Why is a balanced diet important?")]
    ids = engine.prompt_ids("Elderly", turns)
    raw, ours = [], []
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        raw.append(raw_decode(engine, ids, args.tokens))
        ours.append(engine_decode(engine, turns, args.tokens))
    pp = prompt_rate(engine)
    reuse = ttft_series(engine, (2, 8, 16), reuse=True)
    fresh = ttft_series(engine, (2, 8, 16), reuse=False)
    turn_ttfts = conversation_ttft(engine)
    engine.close()
    loads = [load_time(args.model, args.threads) for _ in range(3)]
    starts = [cold_start() for _ in range(3)]
    print(f"model: {args.model.name}, threads {args.threads}, {args.tokens} tokens, median of {args.rounds}")
    print("| measure | raw llama.cpp | MUsE engine | ratio |")
    print("| --- | ---: | ---: | ---: |")
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"| decode tokens/s | {r:.2f} | {o:.2f} | {o / r:.3f} |")
    print(f"| prompt tokens/s (256) | {pp:.1f} | | |")
    print("\n| prompt tokens | TTFT with prefix reuse (s) | TTFT, cache thrown away (s) |")
    print("| ---: | ---: | ---: |")
    for (n, t_reuse), (_, t_fresh) in zip(reuse, fresh, strict=True):
        print(f"| {n} | {t_reuse:.2f} | {t_fresh:.2f} |")
    print(f"\n20-turn conversation, TTFT per turn (s): {' '.join(f'{t:.2f}' for t in turn_ttfts)}")
    print(f"TTFT turn 20 / turn 1: {turn_ttfts[-1] / turn_ttfts[0]:.2f}x (bar <= 1.2x)")
    print(f"model load (median of 3): {statistics.median(loads):.2f} s")
    print(f"window cold start to interactive, whole process (median of 3): {statistics.median(starts):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
