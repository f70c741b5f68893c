"""Reading safetensors checkpoints one tensor at a time.

Reads the format directly (an 8-byte header length, a JSON header, raw data) so
that every problem can be reported precisely (which file, which tensor, how many
bytes are missing) and so that nothing is loaded before it is needed. A tensor is
read into its own buffer with a positioned read rather than through a memory map:
pages of a map that were touched stay counted in the process's resident memory
until the map is closed, so converting a 7.6 GB checkpoint through a map "uses"
7.6 GB; explicit reads keep the peak near one tensor. Also reads bf16, which
numpy has no type for. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import ConversionError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # raw bits; widened by to_float32
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class Scratch:
    """Reusable buffers for the tensor-at-a-time loops.

    A fresh allocation of a few hundred MB costs more in page faults on first touch
    than the conversion done on it (measured: 0.7 s vs 0.05 s for one Phi-3-mini MLP
    weight), so the loops read, widen, merge and narrow into buffers that are sized
    once and reused. An array handed out by a buffer is only valid until the same
    key is asked for again. Not thread-safe: one per thread.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buffer = self._buffers.get(key)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = self._buffers[key] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)


def bf16_to_float32(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of bf16 bits (uint16); ``out`` is an optional uint32/float32 buffer."""
    target = np.empty(bits.shape, dtype=np.uint32) if out is None else out.view(np.uint32)
    np.left_shift(bits, 16, out=target, dtype=np.uint32)
    return target.view(np.float32)


def float32_to_bf16(array: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) of float32 values, rounded to nearest even."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


@dataclass
class TensorSource:
    """A tensor to write: its safetensors dtype and shape, and how to produce its data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    produce: Callable[[], np.ndarray]


def write_safetensors(path: Path, tensors: list[TensorSource], metadata: dict[str, str] | None = None) -> Iterator[str]:
    """Write a safetensors file one tensor at a time (header first); yields each name once written.

    ``path`` is written directly: callers wrap it in :func:`muse_desktop.base.fileio.atomic_path`.
    """
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        nbytes = int(np.prod(tensor.shape, dtype=np.int64)) * DTYPES[tensor.dtype].itemsize
        header[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        for tensor in tensors:
            data = np.ascontiguousarray(tensor.produce(), dtype=DTYPES[tensor.dtype])
            if data.shape != tuple(tensor.shape):
                raise ConversionError(f"{tensor.name}: produced shape {list(data.shape)}, declared {list(tensor.shape)}.")
            data.tofile(handle)
            yield tensor.name


class SafetensorsFile:
    """One ``.safetensors`` file: its header checked against its size, data memory-mapped."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    raise ConversionError(f"{self.path.name} is empty or truncated (only {size} bytes).")
                (header_len,) = struct.unpack("<Q", head)
                if header_len > min(_MAX_HEADER, size - 8):
                    raise ConversionError(
                        f"{self.path.name} is not a valid safetensors file (header of {header_len} bytes "
                        f"in a file of {size} bytes): it may be truncated or not a model file."
                    )
                header = json.loads(handle.read(header_len))
        except FileNotFoundError:
            raise ConversionError(f"Model file missing: {self.path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ConversionError(f"{self.path.name} has a damaged header: not a safetensors file.") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        base = 8 + header_len
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            try:
                dtype, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ConversionError(f"{self.path.name}: the header entry for tensor '{name}' is malformed.") from None
            if dtype not in DTYPES:
                raise ConversionError(f"{self.path.name}: tensor '{name}' has unsupported type {dtype}.")
            expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
            if end - start != expected or start < 0:
                raise ConversionError(
                    f"{self.path.name}: tensor '{name}' claims {end - start} bytes but its shape "
                    f"{list(shape)} of {dtype} needs {expected}."
                )
            if base + end > size:
                raise ConversionError(
                    f"{self.path.name} is truncated: tensor '{name}' needs bytes up to {base + end} "
                    f"but the file has {size}. Download or copy the file again."
                )
            self.tensors[name] = TensorInfo(name, dtype, shape, self.path, base + start, base + end)

    def read_rows(self, name: str, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` (along the first axis) as stored (bf16 as uint16 bits), into ``out`` if given."""
        info = self.tensors[name]
        dtype = DTYPES[info.dtype]
        shape = (stop - start, *info.shape[1:]) if info.shape else ()
        row_bytes = info.nbytes // info.shape[0] if info.shape else info.nbytes
        array = np.empty(shape, dtype=dtype) if out is None else out
        want = array.nbytes
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(info.start + start * row_bytes)
            got = handle.readinto(memoryview(array.reshape(-1).view(np.uint8)))
        if got != want:
            raise ConversionError(f"{self.path.name} changed or was truncated while reading tensor '{name}'.")
        return array

    def raw(self, name: str) -> np.ndarray:
        """The whole stored array, freshly read (bf16 as uint16 bits)."""
        info = self.tensors[name]
        return self.read_rows(name, 0, info.shape[0] if info.shape else 0)

    def float32(self, name: str) -> np.ndarray:
        """The whole tensor as float32."""
        array = self.raw(name)
        return bf16_to_float32(array) if self.tensors[name].dtype == "BF16" else array.astype(np.float32, copy=False)

    def rows_float32(self, name: str, start: int, stop: int, scratch: Scratch) -> np.ndarray:
        """Rows ``[start, stop)`` as float32, in ``scratch``'s buffers."""
        info = self.tensors[name]
        shape = (stop - start, *info.shape[1:])
        wide = scratch.array("f32", shape, np.float32)
        if info.dtype == "F32":
            return self.read_rows(name, start, stop, out=wide)
        narrow = self.read_rows(name, start, stop, out=scratch.array("raw", shape, DTYPES[info.dtype]))
        if info.dtype == "BF16":
            return bf16_to_float32(narrow, out=wide)
        np.copyto(wide, narrow, casting="unsafe")
        return wide


class Checkpoint:
    """All tensors of a Hugging Face checkpoint folder (sharded with an index, or one file)."""

    def __init__(self, folder: Path, files: dict[str, SafetensorsFile], where: dict[str, str]):
        self.folder = folder
        self.files = files
        self.where = where  # tensor name -> file name

    @classmethod
    def open(cls, folder: str | Path) -> "Checkpoint":
        folder = Path(folder)
        index_path = folder / INDEX_FILE
        if index_path.exists():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConversionError(f"{INDEX_FILE} in {folder} is damaged (no weight_map).") from None
            missing = sorted({f for f in weight_map.values() if not (folder / f).exists()})
            if missing:
                raise ConversionError(f"Checkpoint shard missing: {', '.join(missing)} (named in {INDEX_FILE}).")
            files = {f: SafetensorsFile(folder / f) for f in sorted(set(weight_map.values()))}
            for tensor, file_name in weight_map.items():
                if tensor not in files[file_name].tensors:
                    raise ConversionError(
                        f"{INDEX_FILE} says tensor '{tensor}' is in {file_name}, but that file does not have it."
                    )
            return cls(folder, files, dict(weight_map))
        single = folder / SINGLE_FILE
        if single.exists():
            file = SafetensorsFile(single)
            return cls(folder, {SINGLE_FILE: file}, dict.fromkeys(file.tensors, SINGLE_FILE))
        if list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth")):
            raise ConversionError(
                f"{folder} holds PyTorch pickle files (.bin/.pt). MUsE Desktop never unpickles files; "
                "please use a checkpoint saved as safetensors."
            )
        raise ConversionError(f"No model weights found in {folder} (expected {SINGLE_FILE} or {INDEX_FILE}).")

    def names(self) -> list[str]:
        return list(self.where)

    def info(self, name: str) -> TensorInfo:
        return self.files[self.where[name]].tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def float32(self, name: str) -> np.ndarray:
        return self.files[self.where[name]].float32(name)

    def rows_float32(self, name: str, start: int, stop: int, scratch: Scratch) -> np.ndarray:
        return self.files[self.where[name]].rows_float32(name, start, stop, scratch)

    def raw(self, name: str) -> np.ndarray:
        return self.files[self.where[name]].raw(name)

    def items(self) -> Iterator[tuple[str, TensorInfo]]:
        for name in self.where:
            yield name, self.info(name)
