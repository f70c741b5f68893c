#!/usr/bin/env python3
"""Merge + convert benchmark at Phi-3-mini's exact size (issue "converters/").

    python benchmarks/merge_convert.py WORK_DIR [--keep]

Writes a random-weight checkpoint with Phi-3-mini-4k's exact shapes (bf16, 3.82 B
parameters, two safetensors shards) and a rank-64 LoRA adapter on every linear
module, then runs, each in a fresh process, side by side:

  (a) ours: one-pass merge + convert to an f16 GGUF
  (b) ours: plain convert to an f16 GGUF, no adapter
  (c) what users do today: PEFT merge_and_unload + save_pretrained (bf16)
  (d) llama.cpp Q4_K_M quantization of (a)'s output
  (r) with --reference PATH/convert_hf_to_gguf.py: llama.cpp's own converter,
      f16, no merge (the script is not part of this repository: point to a
      llama.cpp checkout, e.g. the one inside llama-cpp-python's source archive)

and prints wall time and peak resident memory of each, with the ratios the bars
are stated in. Needs the [train] extra and about 35 GB of free disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PHI3_MINI = {  # microsoft/Phi-3-mini-4k-instruct config.json
    "architectures": ["Phi3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "embd_pdrop": 0.0,
    "eos_token_id": 32000,
    "hidden_act": "silu",
    "hidden_size": 3072,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 4096,
    "model_type": "phi3",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "original_max_position_embeddings": 4096,
    "pad_token_id": 32000,
    "resid_pdrop": 0.0,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "sliding_window": 2047,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32064,
}
RANK = 64


def _random_bf16(shape, rng, block) -> np.ndarray:
    # Tiling one random block is as good as fresh noise for timing and far quicker to make.
    n = int(np.prod(shape))
    start = int(rng.integers(0, block.size))
    return np.resize(np.roll(block, -start), n).reshape(shape)


def make_checkpoint(folder: Path) -> None:
    from converters.phi3 import read_config
    from converters.safetensors_io import TensorSource, float32_to_bf16, write_safetensors
    from muse_desktop.models.demo_model import _tokenizer_files, train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(PHI3_MINI, indent=2))
    _tokenizer_files(folder, train_tokenizer(folder / ".tok"))
    shutil.rmtree(folder / ".tok")
    config = read_config(folder)
    rng = np.random.default_rng(0)
    block = float32_to_bf16(rng.standard_normal(1 << 24).astype(np.float32) * 0.02)
    norm = float32_to_bf16(np.ones(config.hidden, dtype=np.float32))
    shapes = config.expected_tensors()
    names = list(shapes)
    halves = [names[: len(names) * 2 // 3], names[len(names) * 2 // 3 :]]
    weight_map = {}
    for index, chunk in enumerate(halves, start=1):
        file_name = f"model-{index:05d}-of-00002.safetensors"
        sources = [
            TensorSource(n, "BF16", shapes[n], (lambda s=shapes[n]: norm if len(s) == 1 else _random_bf16(s, rng, block)))
            for n in chunk
        ]
        for _ in write_safetensors(folder / file_name, sources):
            pass
        weight_map.update(dict.fromkeys(chunk, file_name))
    total = sum(int(np.prod(s)) * 2 for s in shapes.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def make_adapter(base: Path, folder: Path) -> None:
    from converters.phi3 import LINEAR_MODULES, read_config
    from converters.safetensors_io import TensorSource, float32_to_bf16, write_safetensors

    config = read_config(base)
    shapes = config.expected_tensors()
    rng = np.random.default_rng(1)
    block = float32_to_bf16(rng.standard_normal(1 << 22).astype(np.float32) * 0.01)
    sources = []
    for layer in range(config.layers):
        for suffix in LINEAR_MODULES:
            module = f"model.layers.{layer}.{suffix}"
            out_features, in_features = shapes[f"{module}.weight"]
            prefix = f"base_model.model.{module}"
            sources.append(TensorSource(f"{prefix}.lora_A.weight", "BF16", (RANK, in_features), lambda s=(RANK, in_features): _random_bf16(s, rng, block)))
            sources.append(TensorSource(f"{prefix}.lora_B.weight", "BF16", (out_features, RANK), lambda s=(out_features, RANK): _random_bf16(s, rng, block)))
    folder.mkdir(parents=True, exist_ok=True)
    for _ in write_safetensors(folder / "adapter_model.safetensors", sources):
        pass
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": RANK, "lora_dropout": 0.05,
        "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], "bias": "none",
        "base_model_name_or_path": str(base), "use_rslora": False, "use_dora": False,
    }, indent=2))


def stage(name: str, work: Path) -> None:
    """Run one measured stage in this (fresh) process."""
    base, adapter = work / "phi3-mini", work / "adapter"
    if name == "ours-merge":
        from converters.convert import convert_model

        for _ in convert_model(base, work / "merged-f16.gguf", "f16", adapter_dir=adapter):
            pass
    elif name == "ours-plain":
        from converters.convert import convert_model

        for _ in convert_model(base, work / "plain-f16.gguf", "f16"):
            pass
    elif name == "peft":
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.save_pretrained(str(work / "peft-merged"), safe_serialization=True)
    elif name == "llama.cpp-convert":
        script = Path(os.environ["MUSE_BENCH_REFERENCE"])
        env = dict(os.environ, PYTHONPATH=str(script.parent / "gguf-py"))
        subprocess.run([sys.executable, str(script), str(base), "--outfile", str(work / "reference-f16.gguf"),
                        "--outtype", "f16"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif name == "quantize":
        from converters.quantize import quantize

        for _ in quantize(work / "merged-f16.gguf", work / "merged-q4_k_m.gguf", "Q4_K_M"):
            pass
    else:
        raise SystemExit(f"unknown stage {name}")


def drop_caches() -> bool:
    """Start each stage with a cold page cache where allowed (root on Linux), so that
    no stage reads what the previous one left in memory."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure(name: str, work: Path) -> dict:
    cold = drop_caches()
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, str(work), "--stage", name])
    # wait4 gives this child's own peak resident set (with the descendants it waited for).
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {name} failed")
    return {"stage": name, "wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2**20, "cold": cold}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--stage")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reference", type=Path, help="llama.cpp's convert_hf_to_gguf.py, for stage (r)")
    parser.add_argument("--only", help="comma-separated stages to run (default: all)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each conversion stage; the fastest is kept")
    args = parser.parse_args()
    if args.stage:
        stage(args.stage, args.work)
        return 0
    work = args.work
    if not (work / "phi3-mini" / "model.safetensors.index.json").exists():
        t = time.perf_counter()
        make_checkpoint(work / "phi3-mini")
        make_adapter(work / "phi3-mini", work / "adapter")
        print(f"generated checkpoint + adapter in {time.perf_counter() - t:.0f} s", flush=True)
    size = sum(p.stat().st_size for p in (work / "phi3-mini").glob("*.safetensors"))
    stages = ["ours-plain", "ours-merge"]
    if args.reference:
        os.environ["MUSE_BENCH_REFERENCE"] = str(args.reference.resolve())
        stages.append("llama.cpp-convert")
    stages += ["quantize", "peft"]
    if args.only:
        stages = [name for name in stages if name in args.only.split(",")]
    conversions = [name for name in stages if name in ("ours-plain", "ours-merge", "llama.cpp-convert")]
    runs = [measure(name, work) for _ in range(args.repeat) for name in conversions]  # interleaved
    results = [min((r for r in runs if r["stage"] == name), key=lambda r: r["wall_s"]) for name in conversions]
    results += [measure(name, work) for name in stages if name not in conversions]
    by = {r["stage"]: r for r in results}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"checkpoint {size / 1e9:.2f} GB bf16; page cache dropped before each stage: "
          f"{all(r['cold'] for r in results)}; conversions: best of {args.repeat}")
    print("| stage | wall (s) | peak RSS (GiB) |")
    print("| --- | ---: | ---: |")
    for r in results:
        print(f"| {r['stage']} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} |")
    if "ours-merge" not in by:
        return 0
    if "ours-plain" in by:
        print(f"\n(a)/(b) wall: {by['ours-merge']['wall_s'] / by['ours-plain']['wall_s']:.2f}x (bar <= 1.3x)")
    print(f"(a) peak RSS: {by['ours-merge']['peak_rss_gib']:.2f} GiB (bar < 1.5 GB)")
    if "llama.cpp-convert" in by:
        ref = by["llama.cpp-convert"]
        print(f"(a)/(r) wall: {by['ours-merge']['wall_s'] / ref['wall_s']:.2f}x, "
              f"(b)/(r) wall: {by['ours-plain']['wall_s'] / ref['wall_s']:.2f}x, "
              f"(a)/(r) peak RSS: {by['ours-merge']['peak_rss_gib'] / ref['peak_rss_gib']:.2f}x")
    if "peft" in by:
        print(f"(c)/(a) wall: {by['peft']['wall_s'] / by['ours-merge']['wall_s']:.2f}x, "
              f"peak RSS {by['peft']['peak_rss_gib'] / by['ours-merge']['peak_rss_gib']:.1f}x")
    if not args.keep:
        for name in ("merged-f16.gguf", "plain-f16.gguf", "reference-f16.gguf", "merged-q4_k_m.gguf", "peft-merged"):
            path = work / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
