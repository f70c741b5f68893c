"""Memory-mapped reading of safetensors checkpoints, one tensor at a time.

Reads the format directly (an 8-byte header length, a JSON header, raw data) so
that every problem can be reported precisely (which file, which tensor, how many
bytes are missing) and so that nothing is loaded before it is needed: a tensor is
a view on a memory map, and the merge/convert loop touches one at a time. Also
reads bf16, which numpy has no type for. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
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


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


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
        self._map: np.memmap | None = None

    def raw(self, name: str) -> np.ndarray:
        """The stored array (a read-only view on the memory map; bf16 as uint16 bits)."""
        info = self.tensors[name]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map[info.start : info.end].view(DTYPES[info.dtype]).reshape(info.shape)

    def float32(self, name: str) -> np.ndarray:
        array = self.raw(name)
        if self.tensors[name].dtype == "BF16":
            return bf16_to_float32(array)
        return array.astype(np.float32, copy=False)


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

    def raw(self, name: str) -> np.ndarray:
        return self.files[self.where[name]].raw(name)

    def items(self) -> Iterator[tuple[str, TensorInfo]]:
        for name in self.where:
            yield name, self.info(name)
