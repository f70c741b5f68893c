"""Streaming GGUF output: declare every tensor first, then write them one at a time.

gguf-py's ``add_tensor`` keeps every array in memory until the end; here each
tensor is produced (read from a memory map, merged, cast), written and dropped,
so peak memory stays near one tensor. The file is written under a temporary name
and renamed only when complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from converters.errors import ConversionError
from muse_desktop.events import CancelToken, Done, Event, Progress
from muse_desktop.fileio import atomic_path

Q = gguf.GGMLQuantizationType
OUTTYPES = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
HEADER_ALLOWANCE = 16 * 1024 * 1024  # metadata and vocabulary, generously
DISK_MARGIN = 64 * 1024 * 1024


def check_outtype(outtype: str) -> None:
    if outtype not in OUTTYPES:
        raise ConversionError(f"Unknown output type '{outtype}'; choose one of {', '.join(OUTTYPES)}.")


def storage_type(name: str, shape: tuple[int, ...], outtype: str) -> Q:
    """The GGML type a tensor is stored as: 1-D tensors and norms stay F32 (as llama.cpp's converter does)."""
    wanted = OUTTYPES[outtype][0]
    if len(shape) < 2 or name.endswith("_norm.weight") or "rope_factors" in name:
        return Q.F32
    if wanted == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] != 0:
        return Q.F16  # rows that do not fill whole Q8_0 blocks
    return wanted


def encode(array: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return np.ascontiguousarray(array, dtype=np.float32)
    if qtype == Q.F16:
        return np.ascontiguousarray(array, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)


def stored_nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    return int(np.prod(gguf.quant_shape_to_byte_shape(shape, qtype), dtype=np.int64))


@dataclass
class TensorPlan:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order
    qtype: Q
    produce: Callable[[], np.ndarray]  # float32 data, computed when written
    source: str = ""  # where it comes from, for messages

    @property
    def nbytes(self) -> int:
        return stored_nbytes(self.shape, self.qtype)


def check_free_space(out_path: Path, needed: int) -> None:
    folder = out_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN:
        raise ConversionError(
            f"Not enough free disk space in {folder}: the output needs about {needed / 2**30:.2f} GiB, "
            f"{free / 2**30:.2f} GiB is free."
        )


def write_gguf(
    out_path: str | Path,
    writer: gguf.GGUFWriter,
    plans: list[TensorPlan],
    cancel: CancelToken | None = None,
    done_message: str = "Written",
) -> Iterator[Event]:
    """Write ``plans`` through ``writer`` (metadata already added) to ``out_path``, atomically."""
    out_path = Path(out_path)
    total = sum(plan.nbytes for plan in plans)
    check_free_space(out_path, total + HEADER_ALLOWANCE)
    for plan in plans:
        if plan.qtype in (Q.F32, Q.F16):
            dtype = np.float32 if plan.qtype == Q.F32 else np.float16
            writer.add_tensor_info(plan.name, plan.shape, np.dtype(dtype), plan.nbytes)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(plan.shape, plan.qtype)
            writer.add_tensor_info(plan.name, byte_shape, np.dtype(np.uint8), plan.nbytes, raw_dtype=plan.qtype)
    written = 0
    with atomic_path(out_path) as tmp:
        try:
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for index, plan in enumerate(plans):
                if cancel is not None:
                    cancel.check()
                data = plan.produce()
                if data.shape != plan.shape:
                    raise ConversionError(f"{plan.source or plan.name}: shape {list(data.shape)}, expected {list(plan.shape)}.")
                if not np.isfinite(data).all():
                    raise ConversionError(
                        f"{plan.source or plan.name} contains NaN or infinite values; the model is damaged."
                    )
                writer.write_tensor_data(encode(data, plan.qtype))
                written += plan.nbytes
                yield Progress(index + 1, len(plans), "tensors", f"{plan.name} ({written / 2**20:.1f} MiB written)")
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise ConversionError(f"The disk filled up while writing {out_path.name}; nothing was kept.") from None
            raise
        finally:
            writer.close()
    yield Done(f"{done_message} {out_path}", str(out_path), {"bytes": out_path.stat().st_size, "tensors": len(plans)})
