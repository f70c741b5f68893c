"""The one GGUF pipeline: convert → F16 → quantize → check → name the results → remove the F16.

Get MUsE, the Trainer's export and the command line all make their GGUF files here:

- :func:`build` converts a checkpoint (merging a PEFT adapter in the same pass when
  asked) to an F16 GGUF, quantizes it, converts an adapter to a GGUF LoRA when asked,
  runs the caller's check while the F16 and the new files both exist, then gives the
  files their final names; whatever happens, the F16 and every unnamed file are
  removed, so a failed check or a cancel leaves nothing behind.
- :func:`verify_against_source` is the one verification pass rule
  (:meth:`converters.verify.VerifyReport.passed`, the tolerance table in
  :mod:`converters.verify`): a file that fails it is refused, everywhere.
- :data:`OUTTYPES` and :data:`QUANT_TYPES` are the pipeline's own tables, which the
  command line offers as choices.

Free disk space is checked before every file is written, by the app's one rule
(:func:`muse_desktop.base.fileio.check_free_space`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from converters.errors import ConversionError
from converters.gguf_out import OUTTYPES as _OUTTYPES
from converters.quantize import DEFAULT_TYPE, QUANT_TYPES as _QUANT_TYPES
from muse_desktop.base.events import CancelToken, Done, Event, Log, Progress

OUTTYPES = tuple(_OUTTYPES)  # what convert writes: f32, f16, bf16, q8_0
QUANT_TYPES = tuple(_QUANT_TYPES)  # what llama.cpp's quantizer makes (F16 means: keep the F16)
DEFAULT_QUANT = DEFAULT_TYPE
F16 = "F16"


class NotVerified(ConversionError):
    """The file does not match its source by the one pass rule; the message says by how much."""


def stage(title: str | None, events: Iterator[Event]) -> Iterator[Event]:
    """Pass a stage's events on, its progress labelled with ``title``; swallow its Done."""
    if title:
        yield Log(title + "…")
    for event in events:
        if isinstance(event, Done):
            continue
        if title and isinstance(event, Progress):
            label = f"{title}: {event.message}" if event.message else title
            yield Progress(event.done, event.total, event.unit, label)
        else:
            yield event


def verify_against_source(model_dir: str | Path, gguf: str | Path, adapter_dir: str | Path | None = None,
                          gguf_lora: str | Path | None = None, cancel: CancelToken | None = None,
                          refusal: str = "The converted model does not match the original"):
    """llama.cpp on ``gguf`` (+ ``gguf_lora``) against transformers (+ PEFT); the report, or NotVerified."""
    from converters.verify import verify

    report = verify(model_dir, gguf, adapter_dir=adapter_dir, gguf_lora=gguf_lora, cancel=cancel)
    if not report.passed():  # the one pass rule, for every caller
        raise NotVerified(f"{refusal} ({report.summary()}); nothing was kept.")
    return report


@dataclass
class Built:
    """What a check sees: the F16 and the new files all exist, none of them under its final name yet."""

    f16: Path | None  # for a reused quantized file: an F16 of the base made again for the check
    quantized: Path  # the same path as f16 when the result is the F16 itself
    lora: Path | None  # the GGUF LoRA, when one is made
    base_dir: Path
    adapter_dir: Path | None  # the PEFT adapter merged in, or converted to the GGUF LoRA
    way: str = ""  # the caller's label for how the files fit together
    cancel: CancelToken | None = None  # a check that takes long honours it


Check = Callable[[Built], dict]


@dataclass
class LoraJob:
    """A PEFT adapter to convert to a GGUF LoRA beside the model."""

    adapter_dir: Path
    final: Path
    outtype: str = "f16"


def build(model_dir: str | Path, final: Path | None, qtype: str = DEFAULT_QUANT, *,
          merge_adapter: str | Path | None = None, lora: LoraJob | None = None, reuse: Path | None = None,
          check: Check | None = None, way: str = "", cancel: CancelToken | None = None,
          titles: dict[str, str] | None = None) -> Iterator[Event]:
    """Make ``final`` (``qtype``; F16 keeps the F16) and/or ``lora.final``; returns what ``check`` said.

    ``final`` None with ``reuse`` (an already made quantized file of the same base): only
    the LoRA is made, and an F16 of the base is made again just for ``check``.
    """
    from converters.convert import convert_adapter, convert_model
    from converters.quantize import quantize

    qtype = qtype.upper()
    if qtype not in QUANT_TYPES:
        raise ConversionError(f"Unknown quantization type '{qtype}'; choose one of {', '.join(QUANT_TYPES)}.")
    titles = {"convert": "Merging and converting" if merge_adapter else "Converting",
              "quantize": f"Quantizing to {qtype}", "check_f16": "Preparing the check",
              "lora": "Converting the adapter to a GGUF LoRA", **(titles or {})}
    model_dir = Path(model_dir)
    f16 = pending_q = pending_lora = None
    check_f16 = None  # an F16 the check reads that is kept: the reused file itself, when it is the F16
    try:
        if final is not None:
            work = final.parent
            f16 = work / f".{final.stem}-f16.gguf"
            yield from stage(titles["convert"], convert_model(model_dir, f16, "f16", adapter_dir=merge_adapter,
                                                               cancel=cancel))
            if qtype == F16:
                pending_q = f16
            else:
                pending_q = work / f".{final.name}.unchecked"
                yield from stage(titles["quantize"], quantize(f16, pending_q, qtype, cancel=cancel))
        elif lora is not None and check is not None:
            if reuse is None:
                raise ValueError("a LoRA alone needs the quantized base it is checked on (reuse)")
            if qtype == F16:
                check_f16 = reuse
            else:
                f16 = lora.final.parent / f".{reuse.stem}-check-f16.gguf"
                yield from stage(titles["check_f16"], convert_model(model_dir, f16, "f16", cancel=cancel))
        if lora is not None:
            pending_lora = lora.final.parent / f".{lora.final.name}.unchecked"
            yield from stage(titles["lora"], convert_adapter(lora.adapter_dir, pending_lora, model_dir, lora.outtype,
                                                             cancel))
        verification: dict = {"checked": False}
        if check is not None:
            yield Log("Checking the result…")
            built = Built(f16 or check_f16, pending_q or reuse or f16, pending_lora, model_dir,
                          Path(merge_adapter) if merge_adapter else (lora.adapter_dir if lora else None), way, cancel)
            verification = {"checked": True, **check(built)}
            for line in verification.get("summary", "Checked.").splitlines():
                yield Log(line)
        if pending_lora is not None:
            os.replace(pending_lora, lora.final)
        if pending_q is not None:
            os.replace(pending_q, final)
        return verification
    finally:
        for leftover in (f16, pending_q, pending_lora):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink()
