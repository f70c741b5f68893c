"""Check a file before llama.cpp sees it: a damaged or foreign file gets a clear message.

llama.cpp aborts or crashes on some malformed files; reading the header with
gguf-py first (magic, version, architecture, every tensor's data inside the file)
keeps the app up and tells the person what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converters.errors import ConversionError

GGUF_MAGIC = b"GGUF"
SUPPORTED_GGUF_ARCHITECTURES = ("phi3",)
# Bits per weight of a GGUF's general.file_type, for size estimates.
FILE_TYPE_BITS = {0: 32.0, 1: 16.0, 32: 16.0, 7: 8.5, 15: 4.9, 17: 5.7, 18: 6.6}


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str
    kind: str  # "model" or "adapter"
    name: str
    file_type: int | None
    n_tensors: int
    size: int
    context_length: int | None
    original_context_length: int | None = None  # LongRoPE: the context its short factors are for
    long_rope: bool = False  # has rope_factors_long / rope_factors_short

    @property
    def bits_per_weight(self) -> float:
        return FILE_TYPE_BITS.get(self.file_type if self.file_type is not None else 1, 16.0)


def _field(reader, key: str):
    field = reader.get_field(key)
    if field is None:
        return None
    return field.contents()


def inspect_gguf(path: str | Path, expect: str = "model") -> GGUFInfo:
    """Read and check a GGUF header; raise ConversionError saying what is wrong."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise ConversionError(f"File not found: {path}") from None
    except IsADirectoryError:
        raise ConversionError(f"{path} is a folder, not a GGUF file.") from None
    if size == 0:
        raise ConversionError(f"{path.name} is empty (0 bytes): it may not have finished downloading or copying.")
    if magic != GGUF_MAGIC:
        hint = " It looks like a safetensors checkpoint: convert it first." if path.suffix == ".safetensors" else ""
        raise ConversionError(f"{path.name} is not a GGUF model file.{hint}")
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as exc:  # gguf-py raises many kinds on a damaged header
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ConversionError(
            f"{path.name} is damaged or truncated: it may not have finished downloading or copying. "
            f"(Detail: {detail})"
        ) from None
    architecture = _field(reader, "general.architecture")
    if architecture is None:
        raise ConversionError(f"{path.name} has no general.architecture: not a usable model file.")
    kind = _field(reader, "general.type") or "model"
    if kind != expect:
        raise ConversionError(f"{path.name} is a GGUF {kind}, but a {expect} was expected.")
    if architecture not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ConversionError(
            f"{path.name} is a '{architecture}' model; MUsE Desktop runs {', '.join(SUPPORTED_GGUF_ARCHITECTURES)} "
            "(the Phi-3 family)."
        )
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise ConversionError(
                f"{path.name} is truncated: tensor {tensor.name} ends at byte {end} but the file has {size}."
            )
    if kind == "model" and not reader.tensors:
        raise ConversionError(f"{path.name} holds no tensors.")
    return GGUFInfo(
        path=path,
        architecture=architecture,
        kind=kind,
        name=_field(reader, "general.name") or path.stem,
        file_type=_field(reader, "general.file_type"),
        n_tensors=len(reader.tensors),
        size=size,
        context_length=_field(reader, f"{architecture}.context_length"),
        original_context_length=_field(reader, f"{architecture}.rope.scaling.original_context_length"),
        long_rope=any(tensor.name == "rope_factors_long.weight" for tensor in reader.tensors),
    )
