"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_peft_adapter(base_dir: Path, out_dir: Path, seed: int = 0, b_scale: float = 3.0, **lora_kwargs) -> Path:
    """A real PEFT LoRA adapter on the tiny model with non-zero B, saved as safetensors.

    With the default ``b_scale`` each module's delta is as large as its weight, so any
    slip in a merge shows; a smaller one gives the size of change a trained LoRA makes.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    options = {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        "init_lora_weights": False,  # random A and B: a merge that drops B shows up
    }
    options.update(lora_kwargs)
    peft_model = get_peft_model(model, LoraConfig(**options))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(b_scale)  # make the delta large enough to matter in the logits
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir
