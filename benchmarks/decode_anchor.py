#!/usr/bin/env python3
"""The engine's prompt and decode speed against llama.cpp's own llama-bench, and the memory-bandwidth limit.

    python benchmarks/decode_anchor.py MODEL.gguf --llama-bench PATH [--threads 2] [--pp 256] [--tg 64] [--rounds 5]
                                       [--flash-attn] [--also-default]
    python benchmarks/decode_anchor.py MODEL.gguf --build-llama-bench DIR ...

``--build-llama-bench DIR`` fetches the source archive of the installed llama-cpp-python
from the package registry (``pip download --no-binary``) and builds llama-bench from the
llama.cpp it vendors, so both sides run the same llama.cpp. Then ``--rounds`` rounds, each:
llama-bench (ppN, tgN, same GGUF, threads and attention as the engine, its best-of-two),
then in this process the engine (ppN through the chat's own context; tgN through
ChatEngine's native sampler loop, greedy) and, right beside it, bare ``llama_decode`` calls
on the same context with random tokens and no sampling (what llama-bench's tg does), the
better of two each. Every round
gives its own ratios; the medians over rounds are the result. On a shared machine a
single run moves by tens of per cent (one run here: llama-bench 14.2 then 9.5 tokens/s),
so one pair of numbers proves nothing; the bare-decode ratio, measured a few seconds
apart in one process, shows what the engine's own loop costs.

The attention must match: llama-bench's own default (``-fa auto``) turns flash attention on
for the CPU, and the app runs with it off (chosen by measurement, see BENCHMARKS.md), so
the anchor is run with ``-fa 0`` (``-fa 1`` with ``--flash-attn``); ``--also-default`` adds
a llama-bench run with its default to each round, to show the difference.

The bandwidth limit: decode reads every weight once per token, so tokens/s cannot pass
(read bandwidth ÷ weight bytes); the bandwidth is this machine's, measured here by
summing a 1 GiB array (best of five).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from muse_desktop.base.llamacpp import extra_buffers_safe  # noqa: E402
from muse_desktop.chat.engine import ChatEngine, EngineSettings, Sampling  # noqa: E402


def build_llama_bench(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = version("llama_cpp_python")
    archive = folder / f"llama_cpp_python-{wanted}.tar.gz"
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                        f"llama-cpp-python=={wanted}", "-d", str(folder)], check=True)
    source = folder / f"llama_cpp_python-{wanted}"
    if not source.exists():
        subprocess.run(["tar", "xzf", str(archive), "-C", str(folder)], check=True)
    llama = source / "vendor" / "llama.cpp"
    binary = llama / "build" / "bin" / "llama-bench"
    if not binary.exists():
        subprocess.run(["cmake", "-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
                        "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF"], cwd=llama, check=True)
        subprocess.run(["cmake", "--build", "build", "--target", "llama-bench", "-j2"], cwd=llama, check=True)
    return binary


def llama_bench(binary: Path, model: Path, threads: int, pp: int, tg: int, flash_attn: str) -> dict[str, float]:
    # The weight layout the engine uses here (no extra buffers where llama.cpp's AMX code is unsafe),
    # and the attention: "0"/"1" as the engine's settings, or "auto", llama-bench's own default
    # (which turns flash attention on for the CPU).
    repack = "1" if extra_buffers_safe() else "0"
    out = subprocess.run([str(binary), "-m", str(model), "-t", str(threads), "-p", str(pp), "-n", str(tg),
                          "-r", "2", "--repack", repack, "-fa", flash_attn, "-o", "json"], capture_output=True,
                         text=True, check=True).stdout
    rows = json.loads(out)
    return {"pp": next(r["avg_ts"] for r in rows if r["n_prompt"] and not r["n_gen"]),
            "tg": next(r["avg_ts"] for r in rows if r["n_gen"] and not r["n_prompt"])}


def engine_speed(engine: ChatEngine, pp: int, tg: int) -> dict[str, float]:
    llm = engine.llm
    ids = [llm.token_bos()] + [5 + i % (llm.n_vocab() - 10) for i in range(1000, 1000 + pp - 1)]
    best: dict[str, float] = {}
    for _ in range(2):  # as llama-bench -r 2, the better of two
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        best["pp"] = max(best.get("pp", 0.0), pp / (time.perf_counter() - start))
        llm.reset()
        count, start = 0, time.perf_counter()
        for _token in engine._native_tokens(ids[:8], Sampling(temperature=0.0, repeat_penalty=1.0)):
            count += 1
            if count == 1:
                start = time.perf_counter()  # after the prompt, as llama-bench's tg has none
            if count == tg + 1:
                break
        best["tg"] = max(best.get("tg", 0.0), tg / (time.perf_counter() - start))
        best["bare"] = max(best.get("bare", 0.0), bare_decode(engine, tg))
    return best


def bare_decode(engine: ChatEngine, tg: int) -> float:
    """llama-bench's tg loop from Python: one llama_decode per random token, nothing sampled."""
    import llama_cpp

    llm = engine.llm
    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    batch = llama_cpp.llama_batch_init(1, 0, 1)
    try:
        token, start = llm.token_bos(), time.perf_counter()
        for position in range(tg + 1):
            if position == 1:
                start = time.perf_counter()
            batch.n_tokens = 1
            batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = token, position, 1, 1
            batch.seq_id[0][0] = 0
            if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            token = random.randrange(llm.n_vocab())
        return tg / (time.perf_counter() - start)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        llm.reset()


def read_bandwidth() -> float:
    import numpy as np

    data = np.ones(1 << 27, dtype=np.float64)  # 1 GiB
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best


def weight_bytes(model: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(str(model)).tensors)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pp", type=int, default=256)
    parser.add_argument("--tg", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--flash-attn", action="store_true",
                        help="run the engine with flash attention (and llama-bench with -fa 1); the app's default is off")
    parser.add_argument("--also-default", action="store_true",
                        help="also run llama-bench with its own default attention (-fa auto: flash attention on the CPU)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--llama-bench", type=Path)
    where.add_argument("--build-llama-bench", type=Path, metavar="DIR")
    args = parser.parse_args()
    binary = args.llama_bench or build_llama_bench(args.build_llama_bench)
    settings = EngineSettings(threads=args.threads, context_length=4096, flash_attn=args.flash_attn)
    same = "1" if settings.flash_attn else "0"
    engine = ChatEngine(args.model, settings)
    rows = []
    try:
        for round_ in range(1, args.rounds + 1):
            bench = llama_bench(binary, args.model, args.threads, args.pp, args.tg, same)
            row = {"round": round_, **{f"bench_{k}": v for k, v in bench.items()}}
            if args.also_default:
                default = llama_bench(binary, args.model, args.threads, args.pp, args.tg, "auto")
                row.update({f"auto_{k}": v for k, v in default.items()})
            row.update(engine_speed(engine, args.pp, args.tg))
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    finally:
        engine.close()
    bandwidth, weights = read_bandwidth(), weight_bytes(args.model)
    attention = "flash attention" if settings.flash_attn else "plain attention (flash attention off)"
    print(f"\nmodel: {args.model.name} ({weights / 2**30:.2f} GiB of weights), threads {args.threads}, "
          f"llama-cpp-python {version('llama_cpp_python')}, "
          f"weights {'repacked' if extra_buffers_safe() else 'in the plain layout (AMX processor)'} on both sides, "
          f"{attention} on both sides (llama-bench -fa {same}), {args.rounds} rounds")
    print(f"| round | llama-bench pp{args.pp} | engine pp{args.pp} | × | llama-bench tg{args.tg} | engine tg{args.tg} "
          f"| × | bare llama_decode tg{args.tg} | engine × bare |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['round']} | {r['bench_pp']:.2f} | {r['pp']:.2f} | {r['pp'] / r['bench_pp']:.2f} "
              f"| {r['bench_tg']:.2f} | {r['tg']:.2f} | {r['tg'] / r['bench_tg']:.2f} "
              f"| {r['bare']:.2f} | {r['tg'] / r['bare']:.2f} |")

    def median(key):
        return statistics.median(r[key] for r in rows)

    def median_ratio(top, bottom):
        return statistics.median(r[top] / r[bottom] for r in rows)

    print(f"| median | {median('bench_pp'):.2f} | {median('pp'):.2f} | **{median_ratio('pp', 'bench_pp'):.2f}** "
          f"| {median('bench_tg'):.2f} | {median('tg'):.2f} | **{median_ratio('tg', 'bench_tg'):.2f}** "
          f"| {median('bare'):.2f} | **{median_ratio('tg', 'bare'):.2f}** |")
    if args.also_default:
        print(f"\nllama-bench with its own default attention (-fa auto, which is flash attention on the CPU), "
              f"same rounds: pp{args.pp} {median('auto_pp'):.2f}, tg{args.tg} {median('auto_tg'):.2f} tokens/s; "
              f"the engine ({attention}) × that: pp {median_ratio('pp', 'auto_pp'):.2f}, "
              f"tg {median_ratio('tg', 'auto_tg'):.2f} (medians of the per-round ratios)")
    limit = bandwidth / weights
    print(f"\nread bandwidth {bandwidth / 1e9:.1f} GB/s (numpy, one thread) → decode limit {limit:.1f} tokens/s; "
          f"engine decode (median) is {median('tg') / limit:.2f} of it, llama-bench {median('bench_tg') / limit:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
