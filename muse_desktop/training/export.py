"""From a finished run to something the chat opens: a merged, quantized GGUF or a GGUF LoRA adapter.

Both ways go through the converters and are checked by logits before they are
registered in the model library:

- **merge**: the adapter is merged into the base in the same pass that writes an F16
  GGUF; llama.cpp's logits on it are compared with transformers + PEFT; then
  llama.cpp's quantizer makes ``qtype`` (Q4_K_M by default) and the F16 file goes.
- **adapter**: the adapter becomes a small GGUF LoRA; the base is converted once (and
  quantized) for it; base F16 + adapter is compared with transformers + PEFT.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from muse_desktop.errors import MuseError
from muse_desktop.events import CancelToken, Done, Event, Log
from muse_desktop.training.config import ADAPTER, CONFIG_FILE

EXPORT_DIR = "export"


class ExportError(MuseError, RuntimeError):
    """A finished run that cannot be turned into a model file; the message says why."""

    exit_code = 2  # what the command line has always returned for it


def _run_info(run_dir: Path) -> tuple[dict, Path]:
    adapter = run_dir / ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{run_dir} has no finished adapter yet; finish (or resume) the training first.")
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ExportError(f"{run_dir} has no readable {CONFIG_FILE}.") from None
    return config, adapter


def _stage(events: Iterator[Event]) -> Iterator[Event]:
    for event in events:
        if not isinstance(event, Done):
            yield event


def _verify(base: str, gguf: Path, adapter: Path, gguf_lora: Path | None = None,
            cancel: CancelToken | None = None) -> Iterator[Event]:
    from converters.verify import verify

    report = verify(base, gguf, adapter_dir=adapter, gguf_lora=gguf_lora, cancel=cancel)
    yield Log(f"Checked against transformers: {report.summary()}")
    if not report.passed():  # converters.verify's one pass rule
        raise ExportError(f"The exported model does not match the trained one ({report.summary()}); "
                          "it was not added to the library.")


def _check_quantized(f16: Path, quantized: Path, qtype: str, lora: Path | None = None,
                     cancel: CancelToken | None = None):
    """Compare the quantized file with its F16 original in llama.cpp; reported, and returned for the library."""
    from converters.quality import compare_quantized

    report = compare_quantized(f16, quantized, qtype, lora_path=lora, cancel=cancel)
    yield Log(f"Checked the {qtype} file against F16: {report.summary()}")
    return report.to_dict()


def base_gguf(base: str, models_dir: Path, qtype: str, cancel: CancelToken | None) -> Iterator[Event]:
    """The base model as GGUF (F16, and ``qtype``), converted once and reused; Done has both paths."""
    from converters.convert import convert_model
    from converters.quantize import quantize

    key = hashlib.sha256(os.path.realpath(base).encode()).hexdigest()[:10]
    stem = f"{Path(base).name}-{key}"
    f16 = models_dir / f"{stem}-F16.gguf"
    if not f16.is_file():
        yield Log(f"Converting the base model {Path(base).name} (once)…")
        yield from _stage(convert_model(base, f16, "f16", cancel=cancel))
    final = f16
    if qtype.upper() != "F16":
        final = models_dir / f"{stem}-{qtype.upper()}.gguf"
        if not final.is_file():
            yield from _stage(quantize(f16, final, qtype, cancel=cancel))
    yield Done("base ready", str(final), {"f16": str(f16)})


def export_run(run_dir: str | Path, mode: str = "merge", qtype: str = "Q4_K_M", store=None,
               models_dir: str | Path | None = None, verify: bool = True,
               cancel: CancelToken | None = None) -> Iterator[Event]:
    """Export a run; Done's path is the GGUF to open (``data`` says the base for an adapter)."""
    from converters.convert import convert_adapter, convert_model
    from converters.quantize import quantize
    from muse_desktop.paths import user_dirs

    run_dir = Path(run_dir)
    config, adapter = _run_info(run_dir)
    base = config["base_model"]
    if not Path(base, "config.json").is_file():
        raise ExportError(f"The base model of this run is no longer at {base}.")
    out_dir = run_dir / EXPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    qtype = qtype.upper()
    if mode == "merge":
        f16 = out_dir / f"{name}-F16.gguf"
        yield Log("Merging the adapter into the base and converting…")
        yield from _stage(convert_model(base, f16, "f16", adapter_dir=adapter, cancel=cancel))
        if verify:
            yield from _verify(base, f16, adapter, cancel=cancel)
        final = f16
        quant_check = None
        if qtype != "F16":
            final = out_dir / f"{name}-{qtype}.gguf"
            yield Log(f"Quantizing to {qtype}…")
            yield from _stage(quantize(f16, final, qtype, cancel=cancel))
            quant_check = yield from _check_quantized(f16, final, qtype, cancel=cancel)
            f16.unlink(missing_ok=True)
        kind, base_path = "model", ""
    elif mode == "adapter":
        models = Path(models_dir) if models_dir else user_dirs().models
        done = None
        for event in base_gguf(base, models, qtype, cancel):
            if isinstance(event, Done):
                done = event
            else:
                yield event
        final = out_dir / f"{name}-lora-F16.gguf"
        yield Log("Converting the adapter to a GGUF LoRA…")
        yield from _stage(convert_adapter(adapter, final, base, "f16", cancel=cancel))
        if verify:
            yield from _verify(base, Path(done.data["f16"]), adapter, final, cancel=cancel)
        quant_check = None
        if done.path != done.data["f16"]:
            quant_check = yield from _check_quantized(Path(done.data["f16"]), Path(done.path), qtype, lora=final,
                                                      cancel=cancel)
        kind, base_path = "adapter", done.path
    else:
        raise ExportError(f"Unknown export mode '{mode}': use merge or adapter.")
    info = {"run": str(run_dir), "qtype": qtype, "mode": mode, "preset": config.get("preset", ""),
            "quant_check": quant_check}
    done = Done(f"Exported to {final}", str(final),
                {"kind": kind, "base_path": base_path, "name": name if mode == "merge" else f"{name} (adapter)",
                 **info})
    if store is not None:
        register(store, done)
    yield done


def register(store, done: Done) -> None:
    """Add an export (export_run's Done) to the model library (on the thread that owns ``store``)."""
    data = done.data
    info = {key: data.get(key) for key in ("run", "qtype", "mode", "preset", "quant_check")}
    store.add_to_library(data["name"], data["kind"], done.path, data["base_path"], "trainer", info)
