"""transformers' logits for a checkpoint (+ PEFT adapter), one decoder layer in memory at a time.

The reference a converted GGUF is checked against must come from transformers and
PEFT themselves, not from this package's own reading of the weights. Loading the
whole model in float32 for that takes about 15 GB at Phi-3-mini size, more than a
16 GB laptop can spare. Here the model is built on PyTorch's ``meta`` device (shapes
only), the adapter is attached by PEFT as usual, and then each piece of the model —
the embedding, every decoder layer, the final norm and head — gets its weights from
the safetensors files just before it runs and gives them back right after. The
arithmetic is transformers' own modules (attention, rotary embedding with LongRoPE,
MLP) and PEFT's own LoRA layers (``B(A(x)) * scale`` beside the base layer, the same
sum ``merge_and_unload`` folds in), so a mistake in the converter cannot hide in it.

Run as ``python -m converters.reference`` it works in a child process and writes the
logits to a ``.npy`` file, so the window stays responsive and the memory is returned
when it ends (see :func:`reference_logits`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from converters.errors import ConversionError
from muse_desktop.base.events import CancelToken, Cancelled
from muse_desktop.base.process import module_command

_INDEX = "model.safetensors.index.json"


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that holds it."""
    index = model_dir / _INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: model_dir / file for name, file in weight_map.items()}
    from safetensors import safe_open

    single = model_dir / "model.safetensors"
    with safe_open(str(single), framework="pt") as handle:
        return dict.fromkeys(handle.keys(), single)


def _load(files: dict[str, Path], name: str):
    """One tensor as float32, the file opened and closed around it.

    A memory map kept open would keep every page it ever touched counted in this
    process's memory: 7.6 GB by the end of a Phi-3-mini checkpoint.
    """
    import torch
    from safetensors import safe_open

    with safe_open(str(files[name]), framework="pt") as handle:
        return handle.get_tensor(name).to(torch.float32)


def _checkpoint_name(prefix: str, param_name: str) -> str:
    # PEFT wraps a targeted layer: its base weight is at ...qkv_proj.base_layer.weight.
    return f"{prefix}.{param_name}".replace(".base_layer.", ".")


def _materialize(module, prefix: str, files: dict[str, Path]) -> list[tuple[object, str, tuple]]:
    """Give ``module``'s still-empty parameters their weights; returns what to empty again."""
    import torch

    filled = []
    for name, param in list(module.named_parameters()):
        if not param.is_meta:
            continue  # a LoRA factor PEFT already loaded
        owner_path, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        tensor = _load(files, _checkpoint_name(prefix, name))
        if tuple(tensor.shape) != tuple(param.shape):
            raise ConversionError(f"{prefix}.{name} has shape {list(tensor.shape)}, config.json implies {list(param.shape)}.")
        owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)
        filled.append((owner, leaf, tuple(param.shape)))
    return filled


def _release(filled: list[tuple[object, str, tuple]]) -> None:
    import torch

    for owner, leaf, shape in filled:
        owner._parameters[leaf] = torch.nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False)


def _load_adapter_factors(model, adapter_dir: Path) -> None:
    """Put the saved LoRA factors into PEFT's layers (PEFT itself would move them to the meta device)."""
    import torch
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    for key, tensor in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        # Saved as ...lora_A.weight; in the live model the adapter's name sits in between.
        name = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        if name not in params:
            raise ConversionError(f"The adapter's tensor {key} has no place in the model PEFT built.")
        owner_path, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_path)
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise ConversionError(f"The adapter's tensor {key} has shape {list(tensor.shape)}, PEFT expects {list(params[name].shape)}.")
        owner._parameters[leaf] = torch.nn.Parameter(tensor.to(torch.float32), requires_grad=False)
    missing = [name for name, param in model.named_parameters() if "lora_" in name and param.is_meta]
    if missing:
        raise ConversionError(f"The adapter file has no weights for {missing[0]}.")


def _causal_mask(n: int, sliding_window: int | None):
    """transformers' mask for one sequence: earlier positions, within the sliding window if any."""
    import torch

    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    allowed = k <= q
    if sliding_window:
        allowed &= k > q - sliding_window
    mask = torch.zeros(n, n)
    mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return mask[None, None]


def streamed_logits(model_dir: str | Path, token_ids: Sequence[int], adapter_dir: str | Path | None = None) -> np.ndarray:
    """Float32 logits of transformers (+ PEFT) for ``token_ids``, one layer's weights in memory at a time."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    files = _weight_files(model_dir)
    config = AutoConfig.from_pretrained(str(model_dir))
    config._attn_implementation = "eager"  # takes the explicit mask below as it is
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rotary = type(model.model.rotary_emb)(config=config)  # its frequencies computed for real, on the CPU
    if adapter_dir is not None:
        from peft import PeftModel

        if not Path(adapter_dir, "adapter_model.safetensors").is_file():  # never a pickle (.bin)
            raise ConversionError(f"No adapter_model.safetensors in {adapter_dir}.")

        # PEFT builds its LoRA layers (ranks, scales, patterns, as it reads them) on the
        # meta model; their factors, small, are then put in place from the file.
        model = PeftModel.from_pretrained(model, str(adapter_dir), low_cpu_mem_usage=True)
        _load_adapter_factors(model, Path(adapter_dir))
    model.eval()
    core = model.get_base_model().model if adapter_dir is not None else model.model
    head = model.get_base_model().lm_head if adapter_dir is not None else model.lm_head
    ids = torch.tensor([list(token_ids)])
    positions = torch.arange(ids.shape[1])[None]
    mask = _causal_mask(ids.shape[1], getattr(config, "sliding_window", None))
    with torch.no_grad():
        filled = _materialize(core.embed_tokens, "model.embed_tokens", files)
        hidden = core.embed_tokens(ids)
        _release(filled)
        position_embeddings = rotary(hidden, positions)
        for index, layer in enumerate(core.layers):
            filled = _materialize(layer, f"model.layers.{index}", files)
            out = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=position_embeddings)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x returns a tuple
            _release(filled)
        filled = _materialize(core.norm, "model.norm", files)
        hidden = core.norm(hidden)
        _release(filled)
        if "lm_head.weight" in files:
            filled = _materialize(head, "lm_head", files)
            logits = head(hidden)[0]
            _release(filled)
        else:  # tied embeddings: the head is the embedding matrix
            logits = hidden[0] @ _load(files, "model.embed_tokens.weight").T
    return logits.float().numpy()


def reference_logits(model_dir: str | Path, token_ids: Sequence[int], adapter_dir: str | Path | None = None,
                     cancel: CancelToken | None = None) -> np.ndarray:
    """:func:`streamed_logits` in a child process (its memory is returned to the system when it ends).

    A cancel ends the child at once (a Phi-3-mini reference takes a minute).
    """
    with tempfile.TemporaryDirectory(prefix="muse-reference-") as tmp:
        ids_file, out_file, err_file = Path(tmp, "ids.json"), Path(tmp, "logits.npy"), Path(tmp, "stderr.txt")
        ids_file.write_text(json.dumps(list(map(int, token_ids))))
        command = module_command("converters.reference", str(model_dir), str(adapter_dir or ""), str(ids_file), str(out_file))
        with open(err_file, "wb") as errors:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                while True:
                    try:
                        code = process.wait(timeout=0.2)
                        break
                    except subprocess.TimeoutExpired:
                        if cancel is not None and cancel.cancelled:
                            raise Cancelled("cancelled") from None
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if code != 0 or not out_file.is_file():
            stderr = err_file.read_text(errors="replace")
            lines = [line for line in stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit code {code}"
            if "MemoryError" in stderr or code in (-9, 137):
                reason = "the computer ran out of memory"
            raise ConversionError(f"The transformers reference for the check could not be computed: {reason}")
        return np.load(out_file, allow_pickle=False)


def _child(argv: list[str]) -> int:
    model_dir, adapter_dir, ids_file, out_file = argv
    ids = json.loads(Path(ids_file).read_text())
    logits = streamed_logits(model_dir, ids, adapter_dir or None)
    np.save(out_file, logits, allow_pickle=False)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
