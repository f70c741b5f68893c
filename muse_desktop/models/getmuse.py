""""Get MUsE": Phi-3-mini-128k-instruct plus the published MUsE adapter, ready for the chat.

One generator of events, from an empty models folder to what the chat opens, in one
of two ways the person chooses:

- **merged**: the adapter is merged in the same pass that writes an F16 GGUF
  (converters, no torch), llama.cpp's quantizer makes Q4_K_M, the F16 is removed;
- **add-on**: the base alone becomes the Q4_K_M GGUF (shared with any other add-on,
  and the same file as "the base alone") and the adapter a small GGUF LoRA that
  llama.cpp applies at run time, so the chat can switch MUsE off or blend it.

Before any weights are downloaded, :func:`plan_muse` asks the hub for both
repositories and reads what decides whether the adapter fits: its
``adapter_config.json`` must name the base, its weights must be safetensors (a
``.bin`` is a pickle and is never opened), and its tokenizer files must mean the same
as the base's. Those files are read into memory, so a refusal leaves nothing behind.
Running it again continues where a cancel, a broken connection or a full disk stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from converters.pipeline import Built, LoraJob, build, stage
from muse_desktop.models.download import (
    DownloadError,
    RepoListing,
    bytes_left,
    check_free_space,
    download_repo,
    endpoint_from_env,
    fetch_small,
    list_repo,
    pending,
)
from muse_desktop.base.events import CancelToken, Done, Event, Log
from muse_desktop.models.tokenizer_check import TOKENIZER_FILES, TokenizerMismatch, check_same_tokenizer

BASE_REPO = "microsoft/Phi-3-mini-128k-instruct"
BASE_FILES = ("*.json", "*.safetensors", "tokenizer.model")  # never *.py: no remote code
DEFAULT_ADAPTER_REPO = "seohyunqkr/MUsE"  # the MUsE authors' published adapter
ENV_ADAPTER_REPO = "MUSE_ADAPTER_REPO"
NO_ADAPTER = "none"  # as the adapter repository: set up the base alone
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
QUANT_TYPE = "Q4_K_M"
LORA_OUTTYPE = "f16"
Q4_K_M_FRACTION = 0.32  # Q4_K_M size / F16 size, about 4.9 of 16 bits a weight
F16_BYTES = 2

BASE_ONLY_NOTICE = (
    "This sets up Phi-3-mini-128k-instruct alone, the model MUsE is built on, without MUsE. "
    "It follows the “make … understand” instruction, less closely than MUsE."
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class Way:
    """How MUsE is put together with the base."""

    MERGED = "merged"  # one model file with MUsE built in
    ADDON = "add-on"  # the base file plus a small MUsE add-on applied at run time
    ALL = (MERGED, ADDON)


class Names:
    """What the model library calls the results: plain words, never file names."""

    MERGED = "MUsE — Phi-3-mini with MUsE built in"
    ADDON = "MUsE — Phi-3-mini with the MUsE add-on"
    BASE = "Phi-3-mini (without MUsE)"


class AdapterRefused(DownloadError):
    """The adapter does not fit the base; the message says why, for the person."""


def adapter_repo_from(setting: str = "") -> str:
    """The adapter repository to use: the setting, $MUSE_ADAPTER_REPO, or MUsE's; "" for none."""
    value = (setting or os.environ.get(ENV_ADAPTER_REPO) or DEFAULT_ADAPTER_REPO).strip()
    return "" if value.lower() == NO_ADAPTER else value


def model_file_name(adapter_repo: str, way: str = Way.MERGED) -> str:
    merged = adapter_repo and way == Way.MERGED
    return f"{'muse-phi3-mini-128k' if merged else 'phi3-mini-128k-instruct'}-{QUANT_TYPE}.gguf"


def lora_file_name(adapter_repo: str) -> str:
    stem = "muse" if adapter_repo.lower() == DEFAULT_ADAPTER_REPO.lower() else adapter_repo.replace("/", "--")
    return f"{stem}-lora-phi3-mini-128k-{LORA_OUTTYPE.upper()}.gguf"


def _is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not text.startswith((".", "~"))


# -- planning: everything that can be known before a byte of weights is downloaded -------------


@dataclass
class Plan:
    """The repositories, the checks' outcome, and the sizes of both ways."""

    base: RepoListing
    adapter: RepoListing | None
    models: Path
    warnings: list[str] = field(default_factory=list)
    download: dict[str, int] = field(default_factory=dict)  # way -> bytes still to download
    disk: dict[str, int] = field(default_factory=dict)  # way -> free disk space needed while preparing
    result: dict[str, int] = field(default_factory=dict)  # way -> size of what stays

    @property
    def base_dir(self) -> Path:
        return self.models / self.base.repo_id.split("/")[-1]

    @property
    def adapter_dir(self) -> Path | None:
        return self.models / ("adapter-" + self.adapter.repo_id.replace("/", "--")) if self.adapter else None

    def size(self) -> None:
        """Fill in the sizes of both ways from the listings and what is already downloaded."""
        weights = sum(f.size for f in self.base.select(BASE_FILES) if f.name.endswith(".safetensors"))
        base_left = bytes_left(self.base_dir, pending(self.base_dir, self.base, BASE_FILES))
        adapter_left = (bytes_left(self.adapter_dir, pending(self.adapter_dir, self.adapter, ADAPTER_FILES))
                        if self.adapter else 0)
        quantized = int(weights * Q4_K_M_FRACTION)  # bf16 weights: an F16 GGUF of the same size, then Q4_K_M
        # The add-on is stored as F16, from F32 or BF16 weights: at most the same size.
        lora = next((f.size for f in self.adapter.files if f.name == ADAPTER_WEIGHTS), 0) if self.adapter else 0
        base_ready = (self.models / model_file_name("", Way.ADDON)).is_file()
        for way in Way.ALL:
            if way == Way.ADDON and base_ready:  # the shared base file is made: only the add-on is left
                self.download[way] = adapter_left
                self.disk[way] = adapter_left + lora
                self.result[way] = quantized + lora
                continue
            self.download[way] = base_left + adapter_left
            self.disk[way] = base_left + adapter_left + weights + quantized + (lora if way == Way.ADDON else 0)
            self.result[way] = quantized + (lora if way == Way.ADDON and self.adapter else 0)

    def gb(self, way: str) -> tuple[float, float, float]:
        """(download, free disk while preparing, what stays), in GB, for ``way``."""
        return tuple(round(d[way] / 1e9, 1) for d in (self.download, self.disk, self.result))


def _check_adapter(adapter: RepoListing, base: RepoListing, base_repo: str, endpoint: str) -> list[str]:
    """Refuse an adapter that cannot be used on this base; return warnings for doubtful ones."""
    names = {f.name for f in adapter.files}
    if ADAPTER_CONFIG not in names:
        raise AdapterRefused(f"'{adapter.repo_id}' has no {ADAPTER_CONFIG}, so it is not a LoRA add-on that can "
                             "be used here.")
    if ADAPTER_WEIGHTS not in names:
        if ADAPTER_PICKLE in names:
            raise AdapterRefused(
                f"'{adapter.repo_id}' is published only as {ADAPTER_PICKLE}, a format that can run code on this "
                f"computer when it is opened. MUsE Desktop never opens such files, so it stops here; "
                f"it needs {ADAPTER_WEIGHTS}.")
        raise AdapterRefused(f"'{adapter.repo_id}' has no {ADAPTER_WEIGHTS}.")
    try:
        config = json.loads(fetch_small(adapter, ADAPTER_CONFIG, endpoint).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise AdapterRefused(f"The {ADAPTER_CONFIG} of '{adapter.repo_id}' is not readable JSON.") from None
    if not isinstance(config, dict):
        raise AdapterRefused(f"The {ADAPTER_CONFIG} of '{adapter.repo_id}' is not a JSON object.")
    warnings = []
    named = str(config.get("base_model_name_or_path") or "").strip()
    if not named:
        warnings.append(f"'{adapter.repo_id}' does not say which model it was trained on; "
                        f"it is checked against {base_repo}'s shapes only.")
    elif _is_repo_id(named):
        if named.lower() != base_repo.lower():
            raise AdapterRefused(
                f"'{adapter.repo_id}' was trained on {named}, not on {base_repo}: its base_model_name_or_path "
                f"says so. An add-on only works on the model it was trained on, so it is not used.")
    else:
        warnings.append(f"'{adapter.repo_id}' names a folder on its maker's computer as its base ({named}), "
                        f"not a hub model; it is used on {base_repo}, checked by its shapes.")
    # The kinds of adapter that cannot be merged exactly: converters.lora's own rule, which
    # reads only the config, asked now, before the download.
    from converters.lora import inexact_settings

    reasons = [f"'{key}' is set: {why}" for key, why in inexact_settings(config)]
    if reasons:
        raise AdapterRefused(f"Cannot merge '{adapter.repo_id}' exactly: " + "; ".join(reasons) + ".")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterRefused(f"'{adapter.repo_id}' is a {config.get('peft_type')} adapter; only LoRA can be used.")

    theirs = {name: fetch_small(adapter, name, endpoint) for name in TOKENIZER_FILES if name in names}
    if theirs:
        base_names = {f.name for f in base.files}
        ours = {name: fetch_small(base, name, endpoint) for name in TOKENIZER_FILES if name in base_names}
        try:
            check_same_tokenizer(ours, theirs, f"'{adapter.repo_id}'", base_repo)
        except TokenizerMismatch as exc:
            raise AdapterRefused(str(exc)) from None
    return warnings


def plan_muse(
    models_dir: str | os.PathLike[str] | None = None,
    adapter_repo: str = "",
    endpoint: str | None = None,
    base_repo: str = BASE_REPO,
    base_revision: str = "main",
) -> Plan:
    """Ask the hub, check the adapter against the base, and size both ways; downloads no weights."""
    from muse_desktop.base.paths import user_dirs

    models = Path(models_dir) if models_dir else user_dirs().models
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    adapter_repo = adapter_repo_from(adapter_repo)
    base = list_repo(base_repo, base_revision or "main", endpoint=endpoint)
    weights = sum(f.size for f in base.select(BASE_FILES) if f.name.endswith(".safetensors"))
    if weights <= 0:
        raise DownloadError(f"{base_repo} has no safetensors weights to download.")
    adapter = list_repo(adapter_repo, endpoint=endpoint) if adapter_repo else None
    plan = Plan(base, adapter, models)
    if adapter is not None:
        plan.warnings = _check_adapter(adapter, base, base_repo, endpoint)

    plan.size()
    return plan


# -- building -------------------------------------------------------------------------------------


Check = Callable[[Built], dict]  # Built: what the one GGUF pipeline (converters.pipeline) shows a check


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def get_muse(
    models_dir: str | os.PathLike[str] | None = None,
    adapter_repo: str = "",
    endpoint: str | None = None,
    base_repo: str = BASE_REPO,
    cancel: CancelToken | None = None,
    way: str = Way.MERGED,
    base_revision: str = "main",
    check: Check | None = None,
    plan: Plan | None = None,
) -> Iterator[Event]:
    """Fetch and build MUsE; Done's path is the model GGUF, ``data`` has the add-on and the provenance.

    ``check`` is called when the F16 and the quantized file both exist (default:
    :func:`standard_check`); what it returns is recorded as the verification result, and
    an exception stops with nothing kept.
    """
    check = check or standard_check
    if way not in Way.ALL:
        raise ValueError(f"unknown way '{way}'; choose one of {', '.join(Way.ALL)}")
    endpoint = (endpoint or endpoint_from_env()).rstrip("/")
    adapter_repo = adapter_repo_from(adapter_repo)
    from muse_desktop.base.paths import user_dirs

    models = Path(models_dir) if models_dir else user_dirs().models
    final = models / model_file_name(adapter_repo, way)
    lora_final = models / lora_file_name(adapter_repo) if adapter_repo and way == Way.ADDON else None
    if final.is_file() and (lora_final is None or lora_final.is_file()):
        yield Done(f"{_plain_name(adapter_repo, way)} is already here.", str(final),
                   {"adapter_path": str(lora_final or ""), "name": _plain_name(adapter_repo, way),
                    "provenance": _read_provenance(final, lora_final)})
        return
    if not adapter_repo:
        yield Log(BASE_ONLY_NOTICE, "warning")

    yield Log(f"Asking {endpoint} for {base_repo}" + (f" and {adapter_repo}…" if adapter_repo else "…"))
    plan = plan or plan_muse(models, adapter_repo, endpoint, base_repo, base_revision)
    for warning in plan.warnings:
        yield Log(warning, "warning")
    check_free_space(models, plan.disk[way], "getting the model ready")
    download, disk, _ = plan.gb(way)
    yield Log(f"Needs {download:.1f} GB of download and {disk:.1f} GB of free disk space.")

    # The shared base file is reused only if it was made from the same commit: an add-on is
    # exact only on the weights it was trained on.
    made_from = _read_provenance(final, None).get("base_commit") if final.is_file() else None
    # A base file whose commit is not recorded is made again too: nobody can say it fits.
    base_needed = not final.is_file() or made_from != plan.base.commit
    if final.is_file() and base_needed:
        yield Log(f"{final.name} was made from another commit of {base_repo}; it is made again.", "warning")
    # The base's weights are fetched (or found, already checked) even when the shared base file
    # is reused: the new add-on is checked on them before it is kept.
    base_files = BASE_FILES
    yield from stage("Downloading the model", download_repo(
        base_repo, plan.base_dir, base_files, endpoint=endpoint, cancel=cancel, listing=plan.base))
    if plan.adapter is not None:
        yield from stage("Downloading MUsE", download_repo(
            adapter_repo, plan.adapter_dir, ADAPTER_FILES, endpoint=endpoint, cancel=cancel, listing=plan.adapter))

    merge_dir = plan.adapter_dir if way == Way.MERGED else None
    verification = yield from _build(plan, final if base_needed else None, lora_final, merge_dir, way, check, cancel)
    provenance = {
        "base_repo": base_repo,
        "base_commit": plan.base.commit,
        "adapter_repo": adapter_repo,
        "adapter_commit": plan.adapter.commit if plan.adapter else "",
        "way": way if adapter_repo else "base only",
        "quantization": QUANT_TYPE,
        "sha256": sha256_of(final),
        "adapter_sha256": sha256_of(lora_final) if lora_final else "",
        "adapter_type": LORA_OUTTYPE.upper() if lora_final else "",
        "verification": verification,
    }
    if lora_final is None:
        _write_provenance(final, None, provenance)
    else:  # the base file is the base alone, whichever add-on it later carries
        if base_needed:
            _write_provenance(final, None, {**provenance, "adapter_repo": "", "adapter_commit": "",
                                            "adapter_sha256": "", "adapter_type": "", "way": "base only"})
        _write_provenance(final, lora_final, provenance)
    name = _plain_name(adapter_repo, way)
    yield Done(f"The model is ready: {name}.", str(final),
               {"base_dir": str(plan.base_dir), "adapter_dir": str(plan.adapter_dir or ""),
                "adapter_path": str(lora_final or ""), "name": name, "provenance": provenance})


def _plain_name(adapter_repo: str, way: str) -> str:
    if not adapter_repo:
        return Names.BASE
    return Names.ADDON if way == Way.ADDON else Names.MERGED


def _build(plan: Plan, final: Path | None, lora_final: Path | None, merge_dir: Path | None, way: str,
           check: Check | None, cancel: CancelToken | None) -> Iterator[Event]:
    """The one GGUF pipeline with Get MUsE's words; ``check`` runs while the F16 and the new files exist."""
    lora = LoraJob(plan.adapter_dir, lora_final, LORA_OUTTYPE) if lora_final is not None else None
    return (yield from build(
        plan.base_dir, final, QUANT_TYPE, merge_adapter=merge_dir, lora=lora,
        reuse=plan.models / model_file_name("", Way.ADDON), check=check, way=way, cancel=cancel,
        titles={"quantize": "Making it small enough for a laptop", "lora": "Making the MUsE add-on"}))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_provenance(final: Path, lora_final: Path | None, provenance: dict) -> None:
    """Beside the file it describes, so that a library rebuilt from the folder still knows it."""
    from muse_desktop.base.fileio import atomic_write_text

    atomic_write_text(_sidecar(lora_final or final), json.dumps(provenance, indent=1))


def _read_provenance(final: Path, lora_final: Path | None) -> dict:
    try:
        return json.loads(_sidecar(lora_final or final).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def add_to_library(store, done: Done) -> None:
    """Record what Get MUsE made in the model library, with where it came from."""
    data = done.data or {}
    provenance = data.get("provenance") or {}
    if data.get("adapter_path"):
        base_info = {k: provenance.get(k) for k in ("base_repo", "base_commit", "quantization")}
        store.add_to_library(Names.BASE, "model", done.path, source="get-muse", info=base_info)
        store.add_to_library(data.get("name") or Names.ADDON, "adapter", data["adapter_path"], done.path,
                             "get-muse", provenance)
    else:
        store.add_to_library(data.get("name") or Names.MERGED, "model", done.path, source="get-muse", info=provenance)


def logits_check(built: Built) -> dict:
    """Compare the F16 (with the add-on, for that way) with transformers + PEFT on the same ids.

    converters.verify's one rule decides; its transformers side runs in a child process
    one layer at a time (about 1.4 GB at Phi-3-mini size). Needs the training extra.
    """
    from converters.pipeline import verify_against_source

    if built.f16 is None:  # the shared base file was made (and checked) before
        return {}
    report = verify_against_source(built.base_dir, built.f16, built.adapter_dir, built.lora, built.cancel)
    return {"f16": {"rel_error": report.rel_error, "top1_agreement": report.top1_agreement,
                    "bar": report.tolerance, "tokens": report.n_tokens,
                    "reference": "transformers + PEFT"},
            "summary": f"Checked against the original: {report.summary()}."}


def quantized_check(built: Built) -> dict:
    """How far the quantized file is from the F16 one, in llama.cpp (no training extra needed)."""
    from converters.quality import compare_quantized

    if built.f16 is None:
        return {}
    report = compare_quantized(built.f16, built.quantized, QUANT_TYPE, lora_path=built.lora, cancel=built.cancel)
    return {"quantized_vs_f16": report.to_dict(), "summary": f"Checked the small file: {report.summary()}."}


def training_extra_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "peft"))


def standard_check(built: Built, logits: bool | None = None) -> dict:
    """What every Get MUsE checks: the small file against the F16 one, and (where the training
    extra is installed, or when ``logits`` says so) the F16 against transformers + PEFT."""
    if logits is None:
        logits = training_extra_available()
    result: dict = {}
    summaries = []
    for part in ((logits_check,) if logits else ()) + (quantized_check,):
        found = part(built)
        if found.get("summary"):
            summaries.append(found.pop("summary"))
        result.update(found)
    if not logits:
        result["f16"] = "not checked against transformers (that needs the training part)"
    result["passed"] = True
    result["summary"] = " ".join(summaries) or "Nothing new to check: the files were made and checked before."
    return result
