#!/usr/bin/env python3
"""The engine's prompt and decode speed against llama.cpp's own llama-bench, and the memory-bandwidth limit.

    python benchmarks/decode_anchor.py MODEL.gguf --llama-bench PATH [--threads 2] [--pp 256] [--tg 64]
    python benchmarks/decode_anchor.py MODEL.gguf --build-llama-bench DIR ...

``--build-llama-bench DIR`` fetches the source archive of the installed llama-cpp-python
from the package registry (``pip download --no-binary``) and builds llama-bench from the
llama.cpp it vendors, so both sides run the same llama.cpp. Then, interleaved:
llama-bench (ppN, tgN, same GGUF and threads), the engine (ppN through the chat's own
context; tgN through ChatEngine's native sampler loop, greedy), llama-bench again. The
engine's figures are shown as × the mean of the two llama-bench runs around it.

The bandwidth limit: decode reads every weight once per token, so tokens/s cannot pass
(read bandwidth ÷ weight bytes); the bandwidth is this machine's, measured here by
summing a 1 GiB array (best of five).
"""

from __future__ import annotations

import argparse
import json
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


def llama_bench(binary: Path, model: Path, threads: int, pp: int, tg: int) -> dict[str, float]:
    # The weight layout the engine uses here (no extra buffers where llama.cpp's AMX code is unsafe).
    repack = "1" if extra_buffers_safe() else "0"
    out = subprocess.run([str(binary), "-m", str(model), "-t", str(threads), "-p", str(pp), "-n", str(tg),
                          "-r", "2", "--repack", repack, "-o", "json"], capture_output=True, text=True,
                         check=True).stdout
    rows = json.loads(out)
    return {"pp": next(r["avg_ts"] for r in rows if r["n_prompt"] and not r["n_gen"]),
            "tg": next(r["avg_ts"] for r in rows if r["n_gen"] and not r["n_prompt"])}


def engine_speed(engine: ChatEngine, pp: int, tg: int) -> dict[str, float]:
    llm = engine.llm
    ids = [llm.token_bos()] + [5 + i % (llm.n_vocab() - 10) for i in range(1000, 1000 + pp - 1)]
    best = {}
    for _ in range(2):  # as llama-bench -r 2, the better of two
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        rate = pp / (time.perf_counter() - start)
        best["pp"] = max(best.get("pp", 0.0), rate)
        llm.reset()
        count, start = 0, None
        for _token in engine._native_tokens(ids[:8], Sampling(temperature=0.0, repeat_penalty=1.0)):
            count += 1
            if count == 1:
                start = time.perf_counter()  # after the prompt, as llama-bench's tg has none
            if count == tg + 1:
                break
        best["tg"] = max(best.get("tg", 0.0), tg / (time.perf_counter() - start))
    return best


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
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--llama-bench", type=Path)
    where.add_argument("--build-llama-bench", type=Path, metavar="DIR")
    args = parser.parse_args()
    binary = args.llama_bench or build_llama_bench(args.build_llama_bench)
    before = llama_bench(binary, args.model, args.threads, args.pp, args.tg)
    engine = ChatEngine(args.model, EngineSettings(threads=args.threads, context_length=4096))
    try:
        mine = engine_speed(engine, args.pp, args.tg)
    finally:
        engine.close()
    after = llama_bench(binary, args.model, args.threads, args.pp, args.tg)
    bandwidth, weights = read_bandwidth(), weight_bytes(args.model)
    print(f"model: {args.model.name} ({weights / 2**30:.2f} GiB of weights), threads {args.threads}, "
          f"llama-cpp-python {version('llama_cpp_python')}, "
          f"weights {'repacked' if extra_buffers_safe() else 'in the plain layout (AMX processor)'} on both sides")
    print("| | llama-bench before | MUsE engine | llama-bench after | engine × mean llama-bench |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, name in (("pp", f"pp{args.pp} tokens/s"), ("tg", f"tg{args.tg} tokens/s")):
        mean = (before[key] + after[key]) / 2
        print(f"| {name} | {before[key]:.2f} | {mine[key]:.2f} | {after[key]:.2f} | {mine[key] / mean:.2f} |")
    limit = bandwidth / weights
    print(f"\nread bandwidth {bandwidth / 1e9:.1f} GB/s → decode limit {limit:.1f} tokens/s; "
          f"engine decode is {mine['tg'] / limit:.2f} of it, llama-bench {(before['tg'] + after['tg']) / 2 / limit:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
