"""From a finished run to something the chat opens: a merged, quantized GGUF or a GGUF LoRA adapter.

Both ways go through the converters and are checked by logits before they are
registered in the model library:

- **merge**: the adapter is merged into the base in the same pass that writes an F16
  GGUF; llama.cpp's quantizer makes ``qtype`` (Q4_K_M by default); the F16 is compared
  with transformers + PEFT, the quantized file with the F16, and the F16 goes.
- **adapter**: the adapter becomes a small GGUF LoRA; the base is converted and
  quantized once for every add-on on it; base F16 + adapter is compared with
  transformers + PEFT (the base F16 made again for the check when the base file is reused).

A run trained on top of another add-on (``start_adapter``, e.g. a person's add-on on
MUsE's) is checked on what it was trained on: for an add-on, llama.cpp runs the base
with the start add-on merged plus the new GGUF LoRA, against transformers + PEFT on the
base with both (:mod:`training.stacking`, the exact sum); a merge merges both.

Both are :mod:`converters.pipeline`, the same pipeline as Get MUsE's and the CLI's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from converters.pipeline import Built, Check, LoraJob, build
from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CancelToken, Done, Event, Log
from muse_desktop.training.runfolder import RunFolder


class ExportError(MuseError, RuntimeError):
    """A finished run that cannot be turned into a model file; the message says why."""

    exit_code = 2  # what the command line has always returned for it


def _run_info(run_dir: Path) -> tuple[dict, Path]:
    from muse_desktop.training.config import ConfigError

    run = RunFolder(run_dir)
    if not run.finished():
        raise ExportError(f"{run_dir} has no finished adapter yet; finish (or resume) the training first.")
    try:
        config = run.config().to_dict()
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    return config, run.adapter


def _check(verify: bool, qtype: str, start_adapter: str = "") -> Check:
    """The export's check, run by the pipeline while the F16 and the new files exist: the F16 (with the
    GGUF LoRA) against transformers + PEFT by the one pass rule, then the quantized file against the F16.

    With ``start_adapter`` and a GGUF LoRA, the LoRA is checked on the base with the start add-on merged
    (an F16 made for the check) against transformers on the base with both add-ons."""

    def check(built: Built) -> dict:
        from converters.pipeline import NotVerified, verify_against_source
        from converters.quality import compare_quantized

        lines, result = [], {"quant_check": None}
        if verify:
            try:
                if start_adapter and built.lora is not None:
                    report = _verify_on_start(built, start_adapter)
                else:
                    report = verify_against_source(built.base_dir, built.f16, built.adapter_dir, built.lora,
                                                   built.cancel,
                                                   refusal="The exported model does not match the trained one")
            except NotVerified as exc:
                raise ExportError(f"{exc} It was not added to the library.") from None
            lines.append(f"Checked against transformers: {report.summary()}")
        if built.f16 is not None and built.quantized != built.f16:
            quality = compare_quantized(built.f16, built.quantized, qtype, lora_path=built.lora, cancel=built.cancel)
            lines.append(f"Checked the {qtype} file against F16: {quality.summary()}")
            result["quant_check"] = quality.to_dict()
        return {**result, "summary": "\n".join(lines) or "Not checked (as asked)."}

    return check


def _verify_on_start(built: Built, start_adapter: str):
    """The new GGUF LoRA on (base + start add-on merged, F16) against transformers on base + start + new."""
    import tempfile

    from converters.convert import convert_model
    from converters.pipeline import verify_against_source
    from muse_desktop.training.stacking import combine_adapters

    with tempfile.TemporaryDirectory(prefix=".check-", dir=built.lora.parent) as tmp:
        merged = Path(tmp, "base-with-start-f16.gguf")
        for _event in convert_model(built.base_dir, merged, "f16", adapter_dir=start_adapter, cancel=built.cancel):
            pass
        both = combine_adapters([start_adapter, built.adapter_dir], Path(tmp, "both"), built.base_dir)
        return verify_against_source(built.base_dir, merged, both, built.lora, built.cancel,
                                     refusal="The exported add-on does not match the trained one")


def base_gguf(base: str, models_dir: Path, qtype: str) -> Path:
    """Where the base model's GGUF of ``qtype`` is kept, made once and shared by every add-on on it."""
    key = hashlib.sha256(os.path.realpath(base).encode()).hexdigest()[:10]
    return models_dir / f"{Path(base).name}-{key}-{qtype.upper()}.gguf"


def export_run(run_dir: str | Path, mode: str = "merge", qtype: str = "Q4_K_M", store=None,
               models_dir: str | Path | None = None, verify: bool = True,
               cancel: CancelToken | None = None, adapter_dir: str | Path | None = None,
               start_adapter: str | None = None, name: str = "",
               base_file: str | Path | None = None) -> Iterator[Event]:
    """Export a run; Done's path is the GGUF to open (``data`` says the base for an adapter).

    ``adapter_dir`` exports another PEFT adapter in the run's place (e.g. the run's add-on put
    together with the stage before it), ``start_adapter`` replaces the run's own start add-on
    (what the exported add-on goes on top of); ``name`` replaces the run's name in the file name.
    ``base_file`` (mode adapter): the GGUF the add-on will be used on, already made from the run's base
    (with the start add-on merged, or with it as an add-on): reused as it is, nothing made for it.
    """
    import shutil
    import tempfile

    from muse_desktop.base.paths import user_dirs

    run_dir = Path(run_dir)
    config, adapter = _run_info(run_dir)
    adapter = Path(adapter_dir) if adapter_dir else adapter
    start = config.get("start_adapter", "") if start_adapter is None else start_adapter
    base = config["base_model"]
    if not Path(base, "config.json").is_file():  # the base checkpoint's own config, not the run's
        raise ExportError(f"The base model of this run is no longer at {base}.")
    out_dir = RunFolder(run_dir).export_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or run_dir.name
    qtype = qtype.upper()
    check = _check(verify, qtype, start)
    if mode == "merge":
        final = out_dir / f"{name}-{qtype}.gguf"
        yield Log("Merging the adapter into the base and converting…")
        stacked, merged_in = None, adapter
        if start:  # the model is the base with both add-ons: their exact sum, merged and checked as one
            from muse_desktop.training.stacking import combine_adapters

            stacked = Path(tempfile.mkdtemp(prefix=".stacked-", dir=out_dir))
            merged_in = combine_adapters([start, adapter], stacked / "adapter", base)
        try:
            verification = yield from build(base, final, qtype, merge_adapter=merged_in, check=check, way="merge",
                                            cancel=cancel)
        finally:
            if stacked is not None:
                shutil.rmtree(stacked, ignore_errors=True)
        kind, base_path = "model", ""
    elif mode == "adapter":
        models = Path(models_dir) if models_dir else user_dirs().models
        base_final = Path(base_file) if base_file else base_gguf(base, models, qtype)
        final = out_dir / f"{name}-lora-F16.gguf"
        build_qtype = qtype
        if base_file:
            from converters.gguf_check import inspect_gguf

            # An F32/F16 file is its own check F16. With a start add-on the check makes its own F16
            # (base + start), and the file in use is not the bare base, so it is not compared with one.
            if start or inspect_gguf(base_final).file_type in (0, 1):
                build_qtype = "F16"
        verification = yield from build(
            base, None if base_final.is_file() else base_final, build_qtype, lora=LoraJob(adapter, final, "f16"),
            reuse=base_final, check=check, way="adapter", cancel=cancel,
            titles={"convert": f"Converting the base model {Path(base).name} (once)"})
        kind, base_path = "adapter", str(base_final)
    else:
        raise ExportError(f"Unknown export mode '{mode}': use merge or adapter.")
    info = {"run": str(run_dir), "qtype": qtype, "mode": mode, "preset": config.get("preset", ""),
            "quant_check": verification.get("quant_check"), "start_adapter": start, "adapter_dir": str(adapter)}
    done = Done(f"Exported to {final}", str(final),
                {"kind": kind, "base_path": base_path, "name": name if mode == "merge" else f"{name} (adapter)",
                 **info})
    if store is not None:
        register(store, done)
    yield done


def register(store, done: Done) -> None:
    """Add an export (export_run's Done) to the model library (on the thread that owns ``store``)."""
    data = done.data
    info = {key: data.get(key) for key in ("run", "qtype", "mode", "preset", "quant_check", "start_adapter",
                                           "adapter_dir")}
    store.add_to_library(data["name"], data["kind"], done.path, data["base_path"], "trainer", info)
