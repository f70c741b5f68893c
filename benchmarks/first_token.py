#!/usr/bin/env python3
"""Launch → first token in a fresh process, for a returning person (issue 18).

    python benchmarks/first_token.py MODEL.gguf [--threads 2] [--rounds 2]

Each case is a new Python process (page cache warm after the first) that imports the
engine, loads the model and asks one question, printing the seconds to load, to the
first token, and the decode and prompt rates. Cases, interleaved in every round:
  naive      - no saved prefix: the instruction is evaluated (what the app did);
  saved      - the instruction prefix restored from its saved llama.cpp state;
  saved, no repack - the same with llama.cpp's CPU weight repacking off
               (model param use_extra_bufts=False);
  opened at launch - what the app does: the model opens and ChatEngine.prepare() puts
               the saved instruction in the cache while the first page shows; the
               question then evaluates only its own words.
"question → first token" is the part after the question is asked; with the model opened
at launch it is what the person waits for after pressing Enter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import llama_cpp
if sys.argv[4] == "norepack":  # llama-cpp-python's Llama() has no keyword for it
    default = llama_cpp.llama_model_default_params
    def no_repack():
        params = default()
        params.use_extra_bufts = False
        return params
    llama_cpp.llama_model_default_params = no_repack
from muse_desktop.chat.engine import ChatEngine, EngineSettings, Sampling
from muse_desktop.base.prompting import Turn
state = sys.argv[3] or None
engine = ChatEngine(sys.argv[2], EngineSettings(threads=int(sys.argv[5]), context_length=4096, prefix_state_dir=state))
if sys.argv[6] == "prepare":
    engine.prepare("Elderly")
loaded = time.perf_counter()
sampling = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=33)
for event in engine.generate("Elderly", [Turn("user", "Good morning! What should I do today?")], sampling=sampling):
    pass
done = event.data
t_first = loaded + done["time_to_first_token_s"]
# prompt rate: 256 fresh tokens in the same process
engine.llm.reset()
ids = [engine.llm.token_bos()] + [5 + i % (engine.llm.n_vocab() - 10) for i in range(1000, 1255)]
t = time.perf_counter(); engine.llm.eval(ids); pp = 256 / (time.perf_counter() - t)
engine.llm.reset()
t = time.perf_counter()
tokens = 0
for _token in engine._native_tokens(ids[:20], Sampling(temperature=0.0, repeat_penalty=1.0)):
    tokens += 1
    if tokens == 33:
        break
tg = 32 / (time.perf_counter() - t)
print(json.dumps({"load_s": loaded - start, "first_token_s": t_first - start, "cached": done["cached_tokens"],
                  "question_s": done["time_to_first_token_s"],
                  "prompt": done["prompt_tokens"], "pp": pp, "tg": tg}))
"""


def run(model: Path, state: str, repack: str, threads: int, prepare: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(model), state, repack, str(threads), prepare],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="muse-prefix-")
    run(args.model, state, "repack", args.threads)  # the person's first ever launch: saves the prefix
    cases = {"naive (instruction evaluated)": ("", "repack", ""), "saved prefix restored": (state, "repack", ""),
             "saved prefix, no repacking": (state, "norepack", ""),
             "opened at launch, instruction prepared": (state, "repack", "prepare")}
    results: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (folder, repack, prepare) in cases.items():
            results[name].append(run(args.model, folder, repack, args.threads, prepare))
    print(f"model: {args.model.name}, threads {args.threads}, median of {args.rounds} fresh processes, "
          f"{os.cpu_count()} CPUs")
    print("| case | load (s) | launch → first token (s) | question → first token (s) | prompt tokens (cached) "
          "| pp256 tok/s | tg32 tok/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("load_s", "first_token_s", "question_s", "pp", "tg")}
        print(f"| {name} | {med['load_s']:.2f} | {med['first_token_s']:.2f} | {med['question_s']:.2f} | {rows[0]['prompt']} "
              f"({rows[0]['cached']}) | {med['pp']:.1f} | {med['tg']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
