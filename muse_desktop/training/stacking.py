"""Several LoRA add-ons as one: the exact sum of their changes, written as one PEFT adapter.

A LoRA changes a layer by ``s · B @ A``. Two of them on the same layer change it by
``s₁ B₁A₁ + s₂ B₂A₂ = [s₁B₁ | s₂B₂] @ [A₁ ; A₂]``: one LoRA of rank r₁ + r₂ with scale 1.
A layer that only one of them touches gets zero rows and columns for the other, which
add nothing. So "base + MUsE's add-on + a person's add-on" is one adapter here, exactly
(in float32), for a check or a merge that takes one adapter. Each add-on is read and
checked against the base by the converters' own reader. No torch here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from muse_desktop.base.errors import MuseError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class StackError(MuseError, ValueError):
    """Add-ons that cannot be put together; the message says which and why."""


def combine_adapters(folders: Sequence[str | Path], out_dir: str | Path, base_dir: str | Path) -> Path:
    """Write the sum of the PEFT LoRA adapters in ``folders`` (in order) as one adapter in ``out_dir``."""
    from safetensors.numpy import save_file

    from converters.errors import ConversionError
    from converters.lora import LoraAdapter
    from converters.phi3 import read_config

    folders = [Path(f) for f in folders if str(f)]
    if not folders:
        raise StackError("There is no add-on to put together.")
    try:
        config = read_config(Path(base_dir))
        adapters = [LoraAdapter(folder, config) for folder in folders]
    except ConversionError as exc:
        raise StackError(str(exc)) from None
    widths = [max(m.rank for m in a.modules.values()) for a in adapters]
    rank = sum(widths)
    tensors: dict[str, np.ndarray] = {}
    for module in sorted({name for a in adapters for name in a.modules}):
        a_one, b_one = next(a for a in adapters if module in a.modules).factors(module)
        in_features, out_features = a_one.shape[1], b_one.shape[0]
        a_full = np.zeros((rank, in_features), np.float32)
        b_full = np.zeros((out_features, rank), np.float32)
        start = 0
        for adapter, width in zip(adapters, widths, strict=True):
            if module in adapter.modules:
                a, b = adapter.factors(module)
                a_full[start:start + a.shape[0]] = a
                b_full[:, start:start + a.shape[0]] = b * np.float32(adapter.modules[module].scale)
            start += width
        tensors[f"base_model.model.{module}.lora_A.weight"] = a_full
        tensors[f"base_model.model.{module}.lora_B.weight"] = b_full
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file(tensors, str(out / ADAPTER_WEIGHTS))
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,  # scale 1: it is in B
        "target_modules": sorted(tensors_modules(tensors)), "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
        "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "base_model_name_or_path": str(base_dir),
    }
    (out / ADAPTER_CONFIG).write_text(json.dumps(peft_config, indent=1), encoding="utf-8")
    return out


def tensors_modules(tensors: dict) -> set[str]:
    return {name.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for name in tensors}
