"""Hugging Face Phi-3 checkpoint (+ optional PEFT LoRA) -> GGUF, and PEFT LoRA -> GGUF LoRA.

Both are generators of events (muse_desktop.base.events) that stream one tensor at a time.
"""

from __future__ import annotations

import shutil
import threading
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
from converters.safetensors_io import DTYPES, Checkpoint, Scratch, TensorSource, float32_to_bf16, write_safetensors
from muse_desktop.base.events import CancelToken, Done, Event, Log, Progress
from muse_desktop.base.fileio import atomic_path


def _open_checked(config: Phi3Config) -> Checkpoint:
    checkpoint = Checkpoint.open(config.folder)
    expected = config.expected_tensors()
    missing = [name for name in expected if name not in checkpoint]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ConversionError(f"The checkpoint in {config.folder} lacks tensors: {', '.join(missing[:3])}{more}.")
    # A tensor the GGUF would not carry changes the model (a bias, an extra layer): refuse it.
    # rotary_emb.inv_freq is recomputed from config.json.
    extra = [name for name in checkpoint.where if name not in expected and not name.endswith("rotary_emb.inv_freq")
             and not (config.tie_embeddings and name == "lm_head.weight")]
    if config.tie_embeddings and "lm_head.weight" in checkpoint.where:
        # Tied, yet an output layer is stored: transformers 4 ties it to the embedding after loading,
        # transformers 5 keeps the stored one. Only when both are the same is there one answer.
        if not np.array_equal(checkpoint.raw("lm_head.weight"), checkpoint.raw("model.embed_tokens.weight")):
            raise ConversionError(
                f"{config.folder / 'config.json'}: 'tie_word_embeddings' is on, but the checkpoint stores an "
                "lm_head.weight that differs from the embedding; transformers versions disagree on which is used."
            )
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise ConversionError(
            f"The checkpoint in {config.folder} has tensor '{extra[0]}'{more}, which a Phi-3 GGUF cannot hold; "
            "converting without it would change the model."
        )
    for name, shape in expected.items():
        info = checkpoint.info(name)
        if info.shape != shape:
            raise ConversionError(
                f"{info.file.name}: tensor '{name}' has shape {list(info.shape)} but config.json implies {list(shape)}."
            )
        if info.dtype not in ("F32", "F16", "BF16"):
            raise ConversionError(f"{info.file.name}: tensor '{name}' is {info.dtype}, not a float type.")
    return checkpoint


class _MergedRows:
    """Rows of a base tensor, plus the LoRA delta of the same rows when the adapter has that module."""

    def __init__(self, checkpoint: Checkpoint, name: str, adapter: LoraAdapter | None):
        self.checkpoint = checkpoint
        self.name = name
        module = name[: -len(".weight")]
        self.adapter = adapter if adapter is not None and module in adapter.modules else None
        self.module = module
        self._factors: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:  # loaded once per tensor, shared by the row threads
            if self._factors is None:
                a, b = self.adapter.factors(self.module)
                self._factors = (a, b * np.float32(self.adapter.modules[self.module].scale))
            return self._factors

    def __call__(self, start: int, stop: int, scratch: Scratch) -> np.ndarray:
        rows = self.checkpoint.rows_float32(self.name, start, stop, scratch)
        if self.adapter is not None:
            a, scaled_b = self.factors()
            rows += np.matmul(scaled_b[start:stop], a, out=scratch.array("delta", rows.shape, np.float32))
        return rows

    def release(self) -> None:
        self._factors = None


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
    if config.unknown_keys:
        yield Log(f"config.json has settings this converter does not know: {', '.join(config.unknown_keys)}. "
                  "They were left out; check the result against the original.", "warning")
    if adapter is not None:
        base_name = adapter.config.get("base_model_name_or_path")
        yield Log(f"Merging {len(adapter.modules)} LoRA modules from {Path(adapter_dir).name}"
                  + (f" (trained on {base_name})" if base_name else ""))
    writer = gguf.GGUFWriter(path=None, arch=ARCH_NAME)
    model_name = name or default_model_name(config, Path(adapter_dir).name if adapter_dir else None)
    write_model_metadata(writer, config, model_name, OUTTYPES[outtype][1])
    write_vocab(writer, config)
    plans = [
        TensorPlan.of_array(tensor_name, array, gguf.GGMLQuantizationType.F32, "rope scaling")
        for tensor_name, array in long_rope_tensors(config).items()
    ]
    for hf_name, shape in config.expected_tensors().items():
        gguf_name = gguf_tensor_name(hf_name, config.layers)
        plans.append(
            TensorPlan(
                gguf_name,
                shape,
                storage_type(gguf_name, shape, outtype),
                _MergedRows(checkpoint, hf_name, adapter),
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

        a, b = adapter.factors(module)  # small: rank x width
        if correction != 1.0:
            b = b * np.float32(correction)
        plans.append(TensorPlan.of_array(f"{base_name}.lora_a", a, storage_type("lora", a.shape, outtype), lora.a_name))
        plans.append(TensorPlan.of_array(f"{base_name}.lora_b", b, storage_type("lora", b.shape, outtype), lora.b_name))
    yield Log(f"Writing {len(adapter.modules)} LoRA modules (alpha {file_alpha:g}) to {Path(out_path).name}")
    yield from write_gguf(out_path, writer, plans, cancel, "GGUF LoRA adapter written to")


# ----------------------------------------------------------------------------------------
# Merged model as a safetensors checkpoint (to keep training on it, or share it).


def _merged_in_dtype(checkpoint: Checkpoint, tensor: str, adapter: LoraAdapter):
    def produce() -> np.ndarray:
        info = checkpoint.info(tensor)
        module = tensor[: -len(".weight")]
        if module not in adapter.modules:
            return checkpoint.raw(tensor)
        merged = checkpoint.float32(tensor) + adapter.delta(module)
        return float32_to_bf16(merged) if info.dtype == "BF16" else merged.astype(DTYPES[info.dtype])

    return produce


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
    total = sum(info.nbytes for _, info in checkpoint.items())
    gguf_out.check_free_space(out_dir / "model.safetensors", total)
    done = 0
    for file_name, source in checkpoint.files.items():
        tensors = [
            TensorSource(name, info.dtype, info.shape, _merged_in_dtype(checkpoint, name, adapter))
            for name, info in source.tensors.items()
        ]
        with atomic_path(out_dir / file_name) as tmp:
            for name in write_safetensors(tmp, tensors, source.metadata or None):
                if cancel is not None:
                    cancel.check()
                done += 1
                yield Progress(done, len(checkpoint.where), "tensors", name)
    for extra in config.folder.iterdir():
        if extra.is_file() and not extra.name.endswith(".safetensors"):
            shutil.copyfile(extra, out_dir / extra.name)
    yield Done(f"Merged checkpoint written to {out_dir}", str(out_dir))
