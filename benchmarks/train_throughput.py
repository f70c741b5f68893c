#!/usr/bin/env python3
"""Training throughput and peak memory: our recipe side by side with a plain PEFT + transformers Trainer run.

    python benchmarks/train_throughput.py [--steps 40] [--gpu-steps 20]

CPU part (always): the tiny demo Phi-3, 300 MUsE triples of mixed length, seq 256,
batch 3, LoRA r 8 on all four modules. "ours" is the recipe (rows packed into full
blocks); "plain" is transformers' Trainer with the same LoRA on the same token ids,
each row padded to the sequence length (the usual padding="max_length" recipe).
Each run is its own process, so the peak resident memory is its own.

GPU part (only with CUDA): Phi-3-mini-shaped random weights (saved once, bf16),
seq 1024, batch 3: LoRA bf16 and QLoRA, ours vs plain, tokens/s and peak VRAM.
Without a GPU it says so and stops after the CPU part.

tokens/s counts real (not padding) tokens, over the training steps only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PHI3_MINI = dict(hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=8192, vocab_size=32064)


def make_dataset(path: Path, rows: int = 300, seed: int = 0) -> Path:
    from muse_desktop.models.demo_model import corpus_text

    words = corpus_text().split()
    rng = random.Random(seed)
    user_types = ["Child", "Elderly", "Nurse", "Farmer", "Teenager", "Flight attendant"]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            start = rng.randrange(len(words) - 200)
            length = rng.choice([8, 16, 32, 64, 120])  # short and long answers, as in real data
            out.write(json.dumps({"user_type": rng.choice(user_types),
                                  "question": " ".join(words[start:start + 10]) + f"? ({i})",
                                  "answer": " ".join(words[start + 10:start + 10 + length])}) + "\n")
    return path


def run_ours(base: str, data: str, steps: int, seq: int, batch: int, method: str, out: str) -> dict:
    from muse_desktop.base.events import Done, Metric
    from muse_desktop.training.config import config_from_dict
    from muse_desktop.training.recipe import memory_gb, pick_device, train

    config = config_from_dict({
        "preset": "qlora" if method == "qlora" else "muse-3", "base_model": base, "dataset": data,
        "lora_r": 8 if seq <= 256 else 64, "lora_alpha": 16, "batch_size": batch, "gradient_accumulation": 1,
        "max_steps": steps, "seq_len": seq, "batching": "pack", "validation_split": 0, "eval_questions": 0,
        "save_steps": 10**6, "train_last_layers": 0, "gradient_checkpointing": method == "qlora",
        "optimizer": "paged_adamw_8bit" if method == "qlora" else "adamw"})
    speeds = []
    for event in train(config, out):
        if isinstance(event, Metric) and event.name == "tokens_per_s":
            speeds.append(event.value)
        if isinstance(event, Done):
            break
    return {"tokens_per_s": speeds[-1], "peak_gb": memory_gb(pick_device())}


def run_plain(base: str, data: str, steps: int, seq: int, batch: int, method: str, out: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from muse_desktop.training.config import config_from_dict
    from muse_desktop.training.recipe import memory_gb, pick_device, prepare_data

    device = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = prepare_data(config_from_dict({"base_model": base, "dataset": data, "seq_len": seq,
                                          "validation_split": 0, "eval_questions": 0}), tokenizer).train
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dataset = [{"input_ids": ids + [pad] * (seq - len(ids)), "labels": labels + [-100] * (seq - len(labels)),
                "attention_mask": [1] * len(ids) + [0] * (seq - len(ids))} for ids, labels in rows]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    options = {"dtype": dtype}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                            bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(base, **options)
    if method == "qlora":
        model = prepare_model_for_kbit_training(model)
    model = get_peft_model(model, LoraConfig(r=8 if seq <= 256 else 64, lora_alpha=16, lora_dropout=0.05,
                                             target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
                             logging_steps=10**6, save_strategy="no", report_to=[], bf16=dtype == torch.bfloat16,
                             use_cpu=device.type == "cpu", gradient_checkpointing=method == "qlora",
                             optim="paged_adamw_8bit" if method == "qlora" else "adamw_torch",
                             dataloader_drop_last=True, remove_unused_columns=False)

    def collate(items):
        return {k: torch.tensor([item[k] for item in items]) for k in items[0]}

    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    result = trainer.train()
    real = sum(len(ids) for ids, _ in rows)
    tokens = real / len(rows) * batch * steps  # real tokens in the rows it saw (rows are shuffled)
    return {"tokens_per_s": tokens / result.metrics["train_runtime"], "peak_gb": memory_gb(device)}


def one(argv: list[str]) -> int:
    kind, base, data, steps, seq, batch, method = argv
    with tempfile.TemporaryDirectory() as out:
        runner = run_ours if kind == "ours" else run_plain
        result = runner(base, data, int(steps), int(seq), int(batch), method, out)
    print("RESULT " + json.dumps(result))
    return 0


def measure(kind: str, base: Path, data: Path, steps: int, seq: int, batch: int, method: str) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--one", kind, str(base), str(data), str(steps), str(seq),
                           str(batch), method], capture_output=True, text=True, env=env)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{kind} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def table(title: str, results: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'run':<22}{'tokens/s':>12}{'peak GB':>10}")
    for name, r in results.items():
        print(f"{name:<22}{r['tokens_per_s']:>12.0f}{r['peak_gb']:>10.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--one", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one)
    import torch

    from muse_desktop.models.demo_model import build_demo_model

    work = Path(tempfile.mkdtemp(prefix="muse-train-bench-"))
    base = build_demo_model(work / "tiny")
    data = make_dataset(work / "data.jsonl")
    print(f"CPU: tiny demo Phi-3, {args.steps} steps, seq 256, batch 3, LoRA r 8 (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    cpu = {"ours (packed)": measure("ours", base, data, args.steps, 256, 3, "lora"),
           "plain Trainer (padded)": measure("plain", base, data, args.steps, 256, 3, "lora")}
    table("CPU, tiny model", cpu)
    print(f"ratio ours/plain tokens/s: {cpu['ours (packed)']['tokens_per_s'] / cpu['plain Trainer (padded)']['tokens_per_s']:.2f}x")
    if not torch.cuda.is_available():
        print("\nNo CUDA GPU here: the Phi-3-mini-size LoRA/QLoRA comparison needs one and was not run.")
        return 0
    from transformers import Phi3Config, Phi3ForCausalLM

    mini = work / "phi3-mini-random"
    config = Phi3Config(**PHI3_MINI, max_position_embeddings=4096, pad_token_id=32000, bos_token_id=1,
                        eos_token_id=32000)
    Phi3ForCausalLM(config).to(torch.bfloat16).save_pretrained(mini)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "tokenizer.json"):
        if (base / name).exists():
            (mini / name).write_bytes((base / name).read_bytes())
    gpu = {}
    for method in ("lora", "qlora"):
        gpu[f"ours {method}"] = measure("ours", mini, data, args.gpu_steps, 1024, 3, method)
        gpu[f"plain {method}"] = measure("plain", mini, data, args.gpu_steps, 1024, 3, method)
    table(f"GPU ({torch.cuda.get_device_name(0)}), Phi-3-mini-shaped random weights, seq 1024, batch 3", gpu)
    for method in ("lora", "qlora"):
        print(f"{method}: ours/plain tokens/s {gpu[f'ours {method}']['tokens_per_s'] / gpu[f'plain {method}']['tokens_per_s']:.2f}x")
    print(f"QLoRA peak {gpu['ours qlora']['peak_gb']:.2f} GB (bar: 6 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
