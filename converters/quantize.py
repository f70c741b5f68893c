"""Quantization with llama.cpp's own quantizer (the only source of K-quants).

``llama_model_quantize`` is a blocking C call that cannot be interrupted, so it
runs in a child process: cancelling kills it at once, a crash in llama.cpp
cannot take the app down, and its per-tensor log lines become progress events.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from converters.errors import ConversionError
from converters.gguf_check import inspect_gguf
from converters.gguf_out import check_free_space
from muse_desktop.base.events import CancelToken, Cancelled, Done, Event, Log, Progress
from muse_desktop.base.fileio import atomic_path
from muse_desktop.base.process import module_command

# Type name -> (llama_cpp ftype constant name, approximate bits per weight).
QUANT_TYPES = {
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 4.9),
    "Q5_K_M": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 5.7),
    "Q6_K": ("LLAMA_FTYPE_MOSTLY_Q6_K", 6.6),
    "Q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 8.5),
    "F16": ("LLAMA_FTYPE_MOSTLY_F16", 16.0),
}
DEFAULT_TYPE = "Q4_K_M"
_PROGRESS = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\]\s+(\S+)")


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


def quantize(
    in_path: str | Path,
    out_path: str | Path,
    qtype: str = DEFAULT_TYPE,
    threads: int | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """Quantize a GGUF model to ``qtype``; the output appears only when complete."""
    qtype = qtype.upper()
    if qtype not in QUANT_TYPES:
        raise ConversionError(f"Unknown quantization type '{qtype}'; choose one of {', '.join(QUANT_TYPES)}.")
    in_path, out_path = Path(in_path), Path(out_path)
    if in_path.resolve() == out_path.resolve():
        raise ConversionError("The output must be a different file from the input.")
    info = inspect_gguf(in_path)
    estimate = int(info.size * QUANT_TYPES[qtype][1] / info.bits_per_weight)
    check_free_space(out_path, estimate)
    threads = threads or default_threads()
    yield Log(f"Quantizing {in_path.name} to {qtype} with {threads} threads")
    with atomic_path(out_path) as tmp:
        process = subprocess.Popen(
            module_command("converters.quantize", str(in_path), str(tmp), qtype, str(threads)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        tail: list[str] = []
        try:
            assert process.stderr is not None
            for line in process.stderr:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("cancelled")
                match = _PROGRESS.match(line.strip())
                if match:
                    yield Progress(int(match[1]), int(match[2]), "tensors", match[3])
                else:
                    tail = (tail + [line.rstrip()])[-5:]
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if code != 0:
            reason = next((line for line in reversed(tail) if line.strip()), f"exit code {code}")
            raise ConversionError(f"llama.cpp could not quantize {in_path.name}: {reason}")
    yield Done(f"Quantized model written to {out_path}", str(out_path), {"bytes": out_path.stat().st_size})


def _child(argv: list[str]) -> int:
    import ctypes

    import llama_cpp

    in_path, out_path, qtype, threads = argv
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[qtype][0])
    params.nthread = int(threads)
    code = llama_cpp.llama_model_quantize(in_path.encode(), out_path.encode(), ctypes.byref(params))
    if code != 0:
        print(f"llama_model_quantize returned {code}", file=sys.stderr)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
