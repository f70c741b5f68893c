""""Get MUsE": download Phi-3-mini-128k-instruct (and the MUsE adapter), merge, convert, quantize.

One generator of events, from an empty models folder to a Q4_K_M GGUF the chat opens:
the base checkpoint and the adapter come from the hub (resumable, checked), the
adapter is merged in the same pass that writes an F16 GGUF (converters, no torch),
llama.cpp's quantizer makes Q4_K_M, and the F16 intermediate is removed. Running it
again continues where a cancel, a broken connection or a full disk stopped it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from muse_desktop.download import (
    DownloadError,
    bytes_left,
    check_free_space,
    download_repo,
    endpoint_from_env,
    list_repo,
    pending,
)
from muse_desktop.events import CancelToken, Done, Event, Log, Progress

BASE_REPO = "microsoft/Phi-3-mini-128k-instruct"
BASE_FILES = ("*.json", "*.safetensors", "tokenizer.model")  # never *.py: no remote code
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# The MUsE adapter's hub repository has not been published; until it is, "Get MUsE"
# sets up the base model alone and says so. Set it in the settings (muse_adapter_repo)
# or with MUSE_ADAPTER_REPO when one exists.
DEFAULT_ADAPTER_REPO = ""
ENV_ADAPTER_REPO = "MUSE_ADAPTER_REPO"
QUANT_TYPE = "Q4_K_M"
Q4_K_M_FRACTION = 0.32  # Q4_K_M size / F16 size, about 4.9 of 16 bits a weight

NO_ADAPTER_NOTICE = (
    "The MUsE adapter has not been published for download yet, so this sets up Phi-3-mini-128k-instruct, "
    "the model MUsE is built on. It follows the “make … understand” instruction, less closely than MUsE."
)


def adapter_repo_from(setting: str = "") -> str:
    return (setting or os.environ.get(ENV_ADAPTER_REPO) or DEFAULT_ADAPTER_REPO).strip()


def final_name(adapter_repo: str) -> str:
    stem = "muse-phi3-mini-128k" if adapter_repo else "phi3-mini-128k-instruct"
    return f"{stem}-{QUANT_TYPE}.gguf"


def get_muse(
    models_dir: str | os.PathLike[str] | None = None,
    adapter_repo: str = "",
    endpoint: str | None = None,
    base_repo: str = BASE_REPO,
    cancel: CancelToken | None = None,
) -> Iterator[Event]:
    """Fetch and build the MUsE model; Done's path is the Q4_K_M GGUF."""
    from converters.convert import convert_model
    from converters.quantize import quantize
    from muse_desktop.paths import user_dirs

    models = Path(models_dir) if models_dir else user_dirs().models
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    adapter_repo = adapter_repo_from(adapter_repo)
    final = models / final_name(adapter_repo)
    if final.is_file():
        yield Done(f"{final.name} is already here.", str(final))
        return
    if not adapter_repo:
        yield Log(NO_ADAPTER_NOTICE, "warning")

    yield Log(f"Asking {endpoint} for {base_repo}…")
    base_listing = list_repo(base_repo, endpoint=endpoint)
    base_files = base_listing.select(BASE_FILES)
    weights = sum(f.size for f in base_files if f.name.endswith(".safetensors"))
    if weights <= 0:
        raise DownloadError(f"{base_repo} has no safetensors weights to download.")
    base_dir = models / base_repo.split("/")[-1]
    adapter_listing = list_repo(adapter_repo, endpoint=endpoint) if adapter_repo else None
    adapter_dir = models / ("adapter-" + adapter_repo.replace("/", "--")) if adapter_repo else None
    download_left = bytes_left(base_dir, pending(base_dir, base_listing, BASE_FILES))
    if adapter_listing is not None:
        download_left += bytes_left(adapter_dir, pending(adapter_dir, adapter_listing, ADAPTER_FILES))
    # bf16 weights become an F16 GGUF of the same size, then a Q4_K_M one.
    needed = download_left + int(weights * (1 + Q4_K_M_FRACTION))
    check_free_space(models, needed, "getting the model ready")
    yield Log(f"Needs {download_left / 2**30:.1f} GiB of download and {needed / 2**30:.1f} GiB of free disk space.")

    yield from _stage("Downloading the model", download_repo(
        base_repo, base_dir, BASE_FILES, endpoint=endpoint, cancel=cancel, listing=base_listing))
    if adapter_listing is not None:
        yield from _stage("Downloading the MUsE adapter", download_repo(
            adapter_repo, adapter_dir, ADAPTER_FILES, endpoint=endpoint, cancel=cancel, listing=adapter_listing))

    f16 = models / f".{final.stem}-f16.gguf"
    try:
        yield from _stage("Merging and converting" if adapter_dir else "Converting",
                          convert_model(base_dir, f16, "f16", adapter_dir=adapter_dir, cancel=cancel))
        yield from _stage("Making it small enough for a laptop", quantize(f16, final, QUANT_TYPE, cancel=cancel))
    finally:
        with contextlib.suppress(OSError):
            f16.unlink()
    yield Done(f"The model is ready: {final.name}", str(final),
               {"base_dir": str(base_dir), "adapter_dir": str(adapter_dir) if adapter_dir else ""})


def _stage(title: str, events: Iterator[Event]) -> Iterator[Event]:
    """Pass a stage's events on, its progress labelled with the stage; swallow its Done."""
    yield Log(title + "…")
    for event in events:
        if isinstance(event, Done):
            continue
        if isinstance(event, Progress):
            label = f"{title}: {event.message}" if event.message else title
            yield Progress(event.done, event.total, event.unit, label)
        else:
            yield event
