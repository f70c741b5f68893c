#!/usr/bin/env python3
"""Memory and time of the logits check (``verify``) at Phi-3-mini's exact size.

    python benchmarks/verify_memory.py WORK_DIR [--skip-whole]

Uses the random-weight Phi-3-mini checkpoint and rank-64 adapter of
``merge_convert.py`` (made in WORK_DIR if missing, ~16 GB of disk with the GGUF),
merges and converts them to an F16 GGUF, then runs in fresh processes, side by side
on the same token ids (a MUsE prompt, 200 tokens):

  (s) the reference the check uses now: transformers + PEFT one layer at a time
      (converters.reference, the child process of ``verify``)
  (w) the reference it used before: the whole model in float32 + PEFT merge_and_unload
  (l) llama.cpp's logits on the F16 GGUF (the other half of the check)
  (v) ``verify`` end to end, as export and Get MUsE call it

and prints wall time and peak memory of each: resident (the process's own, with
the children it waited for, from ``wait4``; llama.cpp's memory-mapped GGUF counts
here as it is read) and anonymous (sampled every 0.1 s over the process tree: what
cannot be given back as page cache), and how far (s) is from (w).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
_spec = importlib.util.spec_from_file_location("merge_convert", Path(__file__).with_name("merge_convert.py"))
merge_convert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge_convert)

N_TOKENS = 200


def stage(name: str, work: Path) -> None:
    base, adapter, gguf = work / "phi3-mini", work / "adapter", work / "merged-f16.gguf"
    ids = json.loads((work / "ids.json").read_text())
    if name == "streamed":
        from converters.reference import streamed_logits

        np.save(work / "streamed.npy", streamed_logits(base, ids, adapter))
    elif name == "whole":
        from converters.verify import hf_logits

        np.save(work / "whole.npy", hf_logits(base, ids, adapter))
    elif name == "llama":
        from converters.verify import llama_logits

        llama_logits(gguf, ids, threads=os.cpu_count())
    elif name == "verify":
        from converters.verify import verify

        report = verify(base, gguf, adapter_dir=adapter, token_ids=ids)
        (work / "verify.txt").write_text(report.summary())
    else:
        raise SystemExit(f"unknown stage {name}")


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def _anon_bytes(pid: int) -> int:
    """Anonymous memory of a process tree: what it really takes from RAM. (A memory-mapped
    model file counts in RSS too, but as page cache the system can take back.)"""
    total = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def measure(name: str, work: Path) -> dict:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, str(work), "--stage", name])
    peak_anon, done = [0], threading.Event()

    def sample():
        while not done.wait(0.1):
            peak_anon[0] = max(peak_anon[0], _anon_bytes(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {name} failed")
    return {"stage": name, "wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2**20, "peak_anon_gib": peak_anon[0] / 2**30}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--stage")
    parser.add_argument("--skip-whole", action="store_true", help="leave out (w), which needs ~16 GB of memory")
    args = parser.parse_args()
    work = args.work
    if args.stage:
        stage(args.stage, work)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "phi3-mini" / "model.safetensors.index.json").exists():
        merge_convert.make_checkpoint(work / "phi3-mini")
        merge_convert.make_adapter(work / "phi3-mini", work / "adapter")
    if not (work / "merged-f16.gguf").exists():
        from converters.convert import convert_model

        for _ in convert_model(work / "phi3-mini", work / "merged-f16.gguf", "f16", adapter_dir=work / "adapter"):
            pass
    from converters.verify import default_token_ids

    ids = default_token_ids(work / "phi3-mini", max_tokens=N_TOKENS)
    (work / "ids.json").write_text(json.dumps(ids))
    stages = ["streamed", "llama", "verify"] + ([] if args.skip_whole else ["whole"])
    results = {name: measure(name, work) for name in stages}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; {len(ids)} tokens")
    print("| stage | wall (s) | peak RSS (GiB) | peak anonymous (GiB) |")
    print("| --- | ---: | ---: | ---: |")
    for r in results.values():
        print(f"| {r['stage']} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | {r['peak_anon_gib']:.2f} |")
    print(f"\n(v) verify: {(work / 'verify.txt').read_text()}")
    print(f"(s) peak: {results['streamed']['peak_rss_gib']:.2f} GiB (bar <= 3 GB)")
    if "whole" in results:
        streamed, whole = np.load(work / "streamed.npy"), np.load(work / "whole.npy")
        print(f"(s)/(w) peak RSS: {results['streamed']['peak_rss_gib'] / results['whole']['peak_rss_gib']:.2f}x, "
              f"wall: {results['streamed']['wall_s'] / results['whole']['wall_s']:.2f}x; "
              f"max |s - w| / max |w| = {np.abs(streamed - whole).max() / np.abs(whole).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
