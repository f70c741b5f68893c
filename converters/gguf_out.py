"""Streaming GGUF output: declare every tensor first, then write them one at a time.

gguf-py's ``add_tensor`` keeps every array in memory until the end; here each
tensor is produced (read from a memory map, merged, cast), written and dropped,
so peak memory stays near one tensor. The file is written under a temporary name
and renamed only when complete.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from converters.errors import ConversionError
from converters.safetensors_io import Scratch
from muse_desktop.base.events import CancelToken, Done, Event, Progress
from muse_desktop.base.fileio import atomic_path

Q = gguf.GGMLQuantizationType
OUTTYPES = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
HEADER_ALLOWANCE = 16 * 1024 * 1024  # metadata and vocabulary, generously


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


F16_MAX = float(np.finfo(np.float16).max)
CHUNK_ELEMENTS = 1 << 21  # rows are processed in pieces of about 8 MB of float32


def encode_into(out: np.ndarray, data: np.ndarray, qtype: Q) -> None:
    """Encode float32 ``data`` as ``qtype`` into ``out`` (rows of the stored tensor)."""
    if qtype in (Q.F32, Q.F16):
        np.copyto(out, data, casting="unsafe")
    else:
        out[...] = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def stored_nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    return int(np.prod(gguf.quant_shape_to_byte_shape(shape, qtype), dtype=np.int64))


def stored_array_spec(shape: tuple[int, ...], qtype: Q) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and numpy dtype of a tensor's bytes as written."""
    if qtype == Q.F32:
        return shape, np.dtype(np.float32)
    if qtype == Q.F16:
        return shape, np.dtype(np.float16)
    return tuple(gguf.quant_shape_to_byte_shape(shape, qtype)), np.dtype(np.uint8)


RowSource = Callable[[int, int, Scratch], np.ndarray]


@dataclass
class TensorPlan:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order
    qtype: Q
    rows: RowSource  # float32 rows [start, stop) along the first axis, computed when written
    source: str = ""  # where it comes from, for messages

    @classmethod
    def of_array(cls, name: str, array: np.ndarray, qtype: Q, source: str = "") -> "TensorPlan":
        return cls(name, tuple(array.shape), qtype, lambda start, stop, _: array[start:stop], source)

    @property
    def nbytes(self) -> int:
        return stored_nbytes(self.shape, self.qtype)

    def chunks(self) -> list[tuple[int, int]]:
        n_rows = self.shape[0]
        per_row = int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else n_rows
        step = max(1, CHUNK_ELEMENTS // max(per_row, 1)) if len(self.shape) > 1 else n_rows
        return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]

    def release(self) -> None:
        release = getattr(self.rows, "release", None)
        if release is not None:
            release()


def check_free_space(out_path: Path, needed: int) -> None:
    """The app's one free-space rule (muse_desktop.base.fileio), as a ConversionError."""
    from muse_desktop.base.fileio import check_free_space as rule

    rule(Path(out_path).parent, needed, "the output", ConversionError)


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
        shape, dtype = stored_array_spec(plan.shape, plan.qtype)
        raw_dtype = None if plan.qtype in (Q.F32, Q.F16) else plan.qtype
        writer.add_tensor_info(plan.name, shape, dtype, plan.nbytes, raw_dtype=raw_dtype)
    written = 0
    workers = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="gguf-rows")
    write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gguf-write")
    local = threading.local()
    slots = Scratch()  # two output buffers, "out0" and "out1", used in turn
    pending: dict[int, Future] = {}

    def fill(plan: TensorPlan, out: np.ndarray, start: int, stop: int) -> None:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = Scratch()
        data = plan.rows(start, stop, scratch)
        low, high = float(data.min()), float(data.max())  # NaN propagates through both
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ConversionError(f"{plan.source or plan.name} contains NaN or infinite values; the model is damaged.")
        if plan.qtype == Q.F16 and max(-low, high) > F16_MAX:
            raise ConversionError(f"{plan.source or plan.name} has values too large for f16; convert to bf16 or f32 instead.")
        encode_into(out[start:stop], data, plan.qtype)

    # Rows of each tensor are read, merged and encoded by a few threads (numpy and
    # BLAS release the GIL), while the previous tensor is written by another: the
    # disk and both cores work at once. An output buffer is reused only after its
    # write has finished.
    with atomic_path(out_path) as tmp:
        try:
            writer.write_header_to_file(tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for index, plan in enumerate(plans):
                if cancel is not None:
                    cancel.check()
                slot = index % 2
                if slot in pending:
                    pending.pop(slot).result()
                shape, dtype = stored_array_spec(plan.shape, plan.qtype)
                out = slots.array(f"out{slot}", shape, dtype)
                for future in [workers.submit(fill, plan, out, a, b) for a, b in plan.chunks()]:
                    future.result()
                plan.release()
                pending[slot] = write_thread.submit(writer.write_tensor_data, out)
                written += plan.nbytes
                yield Progress(index + 1, len(plans), "tensors", f"{plan.name} ({written / 2**20:.1f} MiB written)")
            for future in pending.values():
                future.result()
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise ConversionError(f"The disk filled up while writing {out_path.name}; nothing was kept.") from None
            raise
        finally:
            workers.shutdown(wait=True, cancel_futures=True)
            write_thread.shutdown(wait=True, cancel_futures=True)
            writer.close()
    yield Done(f"{done_message} {out_path}", str(out_path), {"bytes": out_path.stat().st_size, "tensors": len(plans)})
