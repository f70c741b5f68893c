"""Before training: what this computer has, how much memory a recipe needs, how long an epoch takes.

The memory estimate adds up the base weights (bf16, fp32 or 4-bit NF4), the LoRA
weights with their gradients and optimizer state, the activations (Korthikanti et al.,
"Reducing Activation Recomputation in Large Transformer Models": about
``s·b·h·(34 + 5·a·s/h)`` bytes a layer in 16-bit, or the layer inputs only with
gradient checkpointing), the logits, and the CUDA context. The time estimate divides
the training FLOPs (about 4 × weights per token with a frozen base, 6 × with
checkpointing's recomputation) by the matrix-multiply speed measured on the spot.
They are estimates, said as such; the numbers the app shows are rounded up.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from muse_desktop.training.config import Method, TrainConfig, load_preset

CUDA_CONTEXT = 0.6 * 2**30
HEADROOM = 0.9  # plan for 90 % of the memory: the rest is fragmentation and other programs
EFFICIENCY = 0.35  # share of the measured matmul speed a training step reaches


@dataclass
class Hardware:
    device: str  # "cuda" or "cpu"
    name: str
    memory_bytes: int
    bf16: bool
    flops: float = 0.0  # measured matrix-multiply speed, FLOP/s

    def describe(self) -> str:
        return f"{self.name} ({self.memory_bytes / 2**30:.1f} GB)"


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def probe(measure: bool = True) -> Hardware:
    """The GPU if there is one, else the CPU and system memory; optionally measure matmul speed."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        hw = Hardware("cuda", props.name, int(props.total_memory), torch.cuda.is_bf16_supported())
        dtype, n = torch.bfloat16 if hw.bf16 else torch.float16, 4096
    else:
        hw = Hardware("cpu", f"CPU ({os.cpu_count()} cores)", _system_memory(), False)
        dtype, n = torch.float32, 512
    if measure:
        a = torch.randn(n, n, dtype=dtype, device=hw.device)
        b = torch.randn(n, n, dtype=dtype, device=hw.device)
        (a @ b).sum().item()  # warm up
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.2:
            (a @ b).sum().item()
            runs += 1
        hw.flops = 2 * n**3 * runs / (time.perf_counter() - start)
    return hw


def read_model_config(base_model: str | Path) -> dict:
    try:
        return json.loads((Path(base_model) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ValueError(f"{base_model} has no readable config.json; is it a model folder?") from None


@dataclass
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config: dict) -> "Shape":
        heads = config["num_attention_heads"]
        return cls(config["hidden_size"], config["num_hidden_layers"], heads,
                   config.get("num_key_value_heads") or heads, config["intermediate_size"], config["vocab_size"])

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each Phi-3 linear layer in a block."""
        h, i = self.hidden, self.intermediate
        return {"qkv_proj": (h, h + 2 * self.kv_heads * self.head_dim), "o_proj": (h, h),
                "gate_up_proj": (h, 2 * i), "down_proj": (i, h)}

    def block_params(self) -> int:
        return sum(a * b for a, b in self.module_dims().values()) + 2 * self.hidden

    def params(self) -> int:
        return self.layers * self.block_params() + 2 * self.vocab * self.hidden + self.hidden


@dataclass
class Estimate:
    bytes: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def gb(self) -> float:
        return self.bytes / 2**30


def trained_layers(config: TrainConfig, layers: int) -> int:
    return config.trained_layers(layers)


def estimate_memory(config: TrainConfig, model: dict, device: str = "cuda", bf16: bool = True) -> Estimate:
    shape = Shape.of(model)
    params = shape.params()
    embed = 2 * shape.vocab * shape.hidden
    width = 2 if device == "cuda" else 4  # bytes of the compute type (fp32 on the CPU)
    if config.method == Method.QLORA:
        base = int((params - embed) * 0.5 * 1.07) + embed * width  # NF4 + absmax; embeddings stay 16-bit
    else:
        base = params * width
    dims = shape.module_dims()
    lora = trained_layers(config, shape.layers) * sum(
        config.lora_r * (dims[m][0] + dims[m][1]) for m in config.target_modules if m in dims)
    optimizer_bytes = 2 if "8bit" in config.optimizer else 8
    adapter = lora * (4 + 4 + optimizer_bytes)
    s, b, h, a = config.seq_len, config.batch_size, shape.hidden, shape.heads
    # On CUDA, PyTorch's fused attention (SDPA) never stores the s×s attention scores.
    scores = 0 if device == "cuda" else 5 * a * s / h
    full_layer = s * b * h * (34 + scores) * (width / 2)
    if config.gradient_checkpointing:
        activations = shape.layers * 2 * s * b * h * (width / 2) + full_layer
    else:
        activations = shape.layers * full_layer
    logits = s * b * shape.vocab * 4 * 3  # fp32 logits, their softmax and gradient
    parts = {"base weights": int(base), "LoRA, gradients, optimizer": int(adapter),
             "activations": int(activations), "logits": int(logits)}
    if device == "cuda":
        parts["CUDA context"] = int(CUDA_CONTEXT)
    return Estimate(sum(parts.values()), parts)


def epoch_seconds(tokens: int, config: TrainConfig, model: dict, hw: Hardware) -> float | None:
    if not hw.flops or not tokens:
        return None
    per_token = (6 if config.gradient_checkpointing else 4) * Shape.of(model).params()
    return tokens * per_token / (hw.flops * EFFICIENCY)


@dataclass
class Advice:
    preset: str | None  # None: nothing fits
    message: str
    estimates: dict[str, Estimate]
    overrides: dict = field(default_factory=dict)  # settings to change on the preset so that it fits


RECOMMENDATION_ORDER = ("muse-3", "muse-1", "qlora")
VARIANTS = ({}, {"gradient_checkpointing": True}, {"gradient_checkpointing": True, "batch_size": 1,
                                                   "gradient_accumulation": 3})


def recommend(model: dict, hw: Hardware, seq_len: int = 1024) -> Advice:
    """The best preset that fits this hardware (changing as little as possible), or why none does."""
    budget = hw.memory_bytes * HEADROOM
    estimates = {}
    for name in RECOMMENDATION_ORDER:
        if name == "qlora" and hw.device != "cuda":
            continue  # 4-bit training on the CPU works but is only sensible for tiny models
        for variant in VARIANTS:
            preset = load_preset(name)
            preset.seq_len = seq_len
            for key, value in variant.items():
                setattr(preset, key, value)
            estimate = estimate_memory(preset, model, hw.device, hw.bf16)
            estimates.setdefault(name, estimate)
            if estimate.bytes <= budget:
                changes = "".join(f", {k.replace('_', ' ')} {'on' if v is True else v}" for k, v in variant.items())
                return Advice(name, f"{name}{changes} fits: about {estimate.gb:.1f} GB of the "
                                    f"{hw.memory_bytes / 2**30:.1f} GB on {hw.name}.", estimates, dict(variant))
            estimates[name] = min(estimates[name], estimate, key=lambda e: e.bytes)
    smallest = min(estimates.items(), key=lambda item: item[1].bytes)
    largest_part = max(smallest[1].parts.items(), key=lambda item: item[1])
    return Advice(None, (
        f"{hw.name} has {hw.memory_bytes / 2**30:.1f} GB; even {smallest[0]} needs about {smallest[1].gb:.1f} GB "
        f"(mostly {largest_part[0]}: {largest_part[1] / 2**30:.1f} GB) at {seq_len}-token sequences. "
        "Shorter sequences or a smaller model would help."), estimates)
