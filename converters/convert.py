"""Hugging Face Phi-3 checkpoint (+ optional PEFT LoRA) -> GGUF, and PEFT LoRA -> GGUF LoRA.

Both are generators of events (DESIGN.md §2) that stream one tensor at a time.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

from converters import gguf_out
from converters.errors import ConversionError
from converters.gguf_out import OUTTYPES, TensorPlan, check_outtype, storage_type, write_gguf
from converters.lora import LoraAdapter
from converters.phi3 import (
    ARCH_NAME,
    Phi3Config,
    default_model_name,
    gguf_tensor_name,
    long_rope_tensors,
    module_gguf_name,
    read_config,
    write_model_metadata,
    write_vocab,
)
from converters.safetensors_io import Checkpoint, bf16_to_float32
from muse_desktop.events import CancelToken, Done, Event, Log, Progress
from muse_desktop.fileio import atomic_path


def _open_checked(config: Phi3Config) -> Checkpoint:
    checkpoint = Checkpoint.open(config.folder)
    expected = config.expected_tensors()
    missing = [name for name in expected if name not in checkpoint]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ConversionError(f"The checkpoint in {config.folder} lacks tensors: {', '.join(missing[:3])}{more}.")
    for name, shape in expected.items():
        info = checkpoint.info(name)
        if info.shape != shape:
            raise ConversionError(
                f"{info.file.name}: tensor '{name}' has shape {list(info.shape)} but config.json implies {list(shape)}."
            )
        if info.dtype not in ("F32", "F16", "BF16"):
            raise ConversionError(f"{info.file.name}: tensor '{name}' is {info.dtype}, not a float type.")
    return checkpoint


def _merged_producer(checkpoint: Checkpoint, name: str, adapter: LoraAdapter | None, module: str | None):
    def produce() -> np.ndarray:
        weight = checkpoint.float32(name)
        if adapter is None or module not in adapter.modules:
            return weight
        return weight + adapter.delta(module)  # float32, a new array; the map stays untouched

    return produce


def convert_model(
    model_dir: str | Path,
    out_path: str | Path,
    outtype: str = "f16",
    adapter_dir: str | Path | None = None,
    name: str | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """Convert (and, with ``adapter_dir``, merge in one pass) a Phi-3 checkpoint to GGUF."""
    check_outtype(outtype)
    config = read_config(model_dir)
    checkpoint = _open_checked(config)
    adapter = LoraAdapter(adapter_dir, config) if adapter_dir else None
    if adapter is not None:
        base_name = adapter.config.get("base_model_name_or_path")
        yield Log(f"Merging {len(adapter.modules)} LoRA modules from {Path(adapter_dir).name}"
                  + (f" (trained on {base_name})" if base_name else ""))
    writer = gguf.GGUFWriter(path=None, arch=ARCH_NAME)
    model_name = name or default_model_name(config, Path(adapter_dir).name if adapter_dir else None)
    write_model_metadata(writer, config, model_name, OUTTYPES[outtype][1])
    write_vocab(writer, config)
    plans = [
        TensorPlan(tensor_name, array.shape, gguf.GGMLQuantizationType.F32, (lambda a=array: a), "rope scaling")
        for tensor_name, array in long_rope_tensors(config).items()
    ]
    for hf_name, shape in config.expected_tensors().items():
        gguf_name = gguf_tensor_name(hf_name, config.layers)
        module = hf_name[: -len(".weight")]
        plans.append(
            TensorPlan(
                gguf_name,
                shape,
                storage_type(gguf_name, shape, outtype),
                _merged_producer(checkpoint, hf_name, adapter, module),
                f"{checkpoint.info(hf_name).file.name}: tensor '{hf_name}'",
            )
        )
    yield Log(f"Writing {len(plans)} tensors as {outtype} to {Path(out_path).name}")
    yield from write_gguf(out_path, writer, plans, cancel, "Converted model written to")


def convert_adapter(
    adapter_dir: str | Path,
    out_path: str | Path,
    base_dir: str | Path,
    outtype: str = "f32",
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """Write a PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp applies at run time.

    llama.cpp scales every pair by ``alpha / rank`` (one alpha for the file, the rank
    from each tensor's shape). Where PEFT's scale differs (rsLoRA, alpha_pattern)
    the difference is folded into B, so the result is exact for every module.
    """
    check_outtype(outtype)
    config = read_config(base_dir)
    adapter = LoraAdapter(adapter_dir, config)
    file_alpha = float(adapter.config.get("lora_alpha", 8))
    writer = gguf.GGUFWriter(path=None, arch=ARCH_NAME)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, file_alpha)
    writer.add_name(f"{default_model_name(config)} LoRA {Path(adapter_dir).name}")
    writer.add_file_type(OUTTYPES[outtype][1])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    plans: list[TensorPlan] = []
    for module, lora in adapter.modules.items():
        base_name = module_gguf_name(module, config.layers)
        correction = lora.scale / (file_alpha / lora.rank)

        def factor(which: int, m=module, k=correction) -> np.ndarray:
            a, b = adapter.factors(m)
            return a if which == 0 else (b * np.float32(k) if k != 1.0 else b)

        a_shape = adapter.weights.tensors[lora.a_name].shape
        b_shape = adapter.weights.tensors[lora.b_name].shape
        plans.append(TensorPlan(f"{base_name}.lora_a", a_shape, storage_type("lora", a_shape, outtype),
                                lambda f=factor: f(0), lora.a_name))
        plans.append(TensorPlan(f"{base_name}.lora_b", b_shape, storage_type("lora", b_shape, outtype),
                                lambda f=factor: f(1), lora.b_name))
    yield Log(f"Writing {len(adapter.modules)} LoRA modules (alpha {file_alpha:g}) to {Path(out_path).name}")
    yield from write_gguf(out_path, writer, plans, cancel, "GGUF LoRA adapter written to")


# ----------------------------------------------------------------------------------------
# Merged model as a safetensors checkpoint (to keep training on it, or share it).

_SAFETENSORS_DTYPE = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def _float32_to_bf16_bits(array: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype(np.uint16)


def merge_to_safetensors(
    model_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """Write base + LoRA as a Hugging Face checkpoint, shard by shard, keeping each tensor's dtype."""
    config = read_config(model_dir)
    checkpoint = _open_checked(config)
    adapter = LoraAdapter(adapter_dir, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(info.nbytes for _, info in checkpoint.items())
    gguf_out.check_free_space(out_dir / "x", total)
    done = 0
    names = checkpoint.names()
    for file_name, source in checkpoint.files.items():
        tensors = [n for n in names if checkpoint.where[n] == file_name]
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for tensor in tensors:
            info = checkpoint.info(tensor)
            header[tensor] = {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [offset, offset + info.nbytes]}
            offset += info.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        with atomic_path(out_dir / file_name) as tmp, open(tmp, "wb") as handle:
            handle.write(struct.pack("<Q", len(blob)) + blob)
            for tensor in tensors:
                if cancel is not None:
                    cancel.check()
                info = checkpoint.info(tensor)
                module = tensor[: -len(".weight")]
                if module in adapter.modules:
                    merged = source.float32(tensor) + adapter.delta(module)
                    if info.dtype == "BF16":
                        data = _float32_to_bf16_bits(merged)
                    else:
                        data = merged.astype(_SAFETENSORS_DTYPE[info.dtype])
                else:
                    data = source.raw(tensor)
                handle.write(np.ascontiguousarray(data).tobytes())
                done += 1
                yield Progress(done, len(names), "tensors", tensor)
    for extra in config.folder.iterdir():
        if extra.is_file() and not extra.name.endswith(".safetensors"):
            shutil.copyfile(extra, out_dir / extra.name)
    yield Done(f"Merged checkpoint written to {out_dir}", str(out_dir))


__all__ = ["convert_model", "convert_adapter", "merge_to_safetensors", "bf16_to_float32"]
