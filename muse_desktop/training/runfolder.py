"""A training run's folder: the one place that knows its files and its states.

Everything else (the child process, the recipe, the DPO stage, export, the Trainer
page, the CLI) asks a :class:`RunFolder` for paths and for the run's state; no other
module spells a file name of a run. The folder holds:

- the run's fully resolved config, stored once when the run is created (every preset
  already applied, checked once); a resume reads it back as it is and never opens a
  preset again, so a run whose preset changed or was removed still resumes the same;
- the status (written by the parent process: running with the child's pid, then
  finished, cancelled or failed with the reason);
- the events, one JSON line each, the child's log, the cancel request;
- the checkpoints, the best and the final adapter, the results, the export folder.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from muse_desktop.base.fileio import atomic_write_text
from muse_desktop.training.config import ConfigError, TrainConfig, config_from_resolved

_CONFIG = "config.json"  # the resolved config, stored once
_LEGACY_REQUEST = "request.json"  # what runs made before the RunFolder stored their config in
_STATUS = "status.json"
_EVENTS = "events.jsonl"
_LOG = "train.log"
_CANCEL = "cancel.request"
_RESULTS = "results.json"
_CHECKPOINTS = "checkpoints"
_ADAPTER = "adapter"  # the final PEFT adapter
_BEST = "best"  # the adapter with the best validation loss
_EXPORT = "export"
_PAIRS = "pairs.jsonl"  # a DPO stage's preference pairs
_ADAPTER_CONFIG = "adapter_config.json"


class RunState:
    """Where a run stands; ``RunFolder.state`` says which, ``RunFolder.resumable`` whether Resume can go on."""

    CREATED = "created"  # the config is stored; nothing ran yet
    RUNNING = "running"  # a training process is working on it now
    CANCELLED = "cancelled"  # stopped when asked; resumable from its checkpoint
    FAILED = "failed"  # stopped by an error, a crash or a kill; resumable from its checkpoint
    FINISHED = "finished"  # the final adapter is saved
    RESUMABLE = "resumable"  # not a state of its own: cancelled or failed with a checkpoint to go on from
    ALL = (CREATED, RUNNING, CANCELLED, FAILED, FINISHED)


class NotARun(ConfigError):
    """The folder is not a training run (it has no stored config)."""


@dataclass
class Status:
    state: str
    kind: str = ""  # for failed: error, out-of-memory, nan, crashed
    message: str = ""
    pid: int = 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """One training run's folder. ``RunFolder.create`` starts one, ``RunFolder.open`` finds one to resume."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- making and opening ----------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: TrainConfig) -> "RunFolder":
        """A new run in ``path`` with ``config`` checked and stored, fully resolved (presets applied)."""
        config.validate()  # the one check: what is stored is what runs, and a resume trusts it
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.path / _CONFIG, json.dumps(config.to_dict(), indent=1))
        (run.path / _STATUS).unlink(missing_ok=True)
        return run

    @classmethod
    def prepare(cls, path: str | os.PathLike[str], config: TrainConfig) -> "RunFolder":
        """The run in ``path``; its config is stored (and checked) if it is not there yet (a direct ``train()``)."""
        run = cls(path)
        if not run.has_config():
            return cls.create(path, config)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "RunFolder":
        """An existing run, to resume or export; refuses a folder that is not a run."""
        run = cls(path)
        if not run.has_config():
            raise NotARun(f"{run.path} is not a training run (its settings are not saved there).")
        return run

    def has_config(self) -> bool:
        return (self.path / _CONFIG).is_file() or (self.path / _LEGACY_REQUEST).is_file()

    def config(self) -> TrainConfig:
        """The stored config as it was resolved when the run was created; no preset is read."""
        for name in (_CONFIG, _LEGACY_REQUEST):
            try:
                data = json.loads((self.path / name).read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise ConfigError(f"The saved settings of {self.name} cannot be read: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"The saved settings of {self.name} are not a mapping of settings.")
            return config_from_resolved(data)
        raise NotARun(f"{self.path} is not a training run (its settings are not saved there).")

    def config_data(self) -> dict:
        """The stored config as a mapping ({} when it cannot be read)."""
        try:
            return self.config().to_dict()
        except ConfigError:
            return {}

    # -- paths the recipe, the child and export use ------------------------------------------

    @property
    def events_path(self) -> Path:
        return self.path / _EVENTS

    @property
    def log_path(self) -> Path:
        return self.path / _LOG

    @property
    def checkpoints(self) -> Path:
        return self.path / _CHECKPOINTS

    @property
    def adapter(self) -> Path:
        return self.path / _ADAPTER

    @property
    def best(self) -> Path:
        return self.path / _BEST

    @property
    def results_path(self) -> Path:
        return self.path / _RESULTS

    @property
    def export_dir(self) -> Path:
        return self.path / _EXPORT

    @property
    def pairs_path(self) -> Path:
        return self.path / _PAIRS

    # -- cancel --------------------------------------------------------------------------------

    def request_cancel(self) -> None:
        (self.path / _CANCEL).write_text("cancel\n", encoding="utf-8")

    def cancel_requested(self) -> bool:
        return (self.path / _CANCEL).exists()

    def clear_cancel(self) -> None:
        (self.path / _CANCEL).unlink(missing_ok=True)

    # -- checkpoints and results ------------------------------------------------------------------

    def checkpoint_dir(self, step: int) -> Path:
        """Where the checkpoint after optimizer step ``step`` goes (names sort by step)."""
        return self.checkpoints / f"step-{step:07d}"

    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first (a half-written ``.tmp`` one is not a checkpoint)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob("step-*") if not p.name.endswith(".tmp"))

    def last_checkpoint_step(self) -> int | None:
        found = self.checkpoint_dirs()
        return int(found[-1].name.split("-")[1]) if found else None

    def finished(self) -> bool:
        return (self.adapter / _ADAPTER_CONFIG).is_file()

    def results(self) -> dict:
        try:
            data = json.loads(self.results_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_results(self, results: dict) -> None:
        atomic_write_text(self.results_path, json.dumps(results, indent=1))

    # -- state -------------------------------------------------------------------------------------

    def mark(self, state: str, kind: str = "", message: str = "", pid: int = 0) -> None:
        """Record the state (the parent process does, so that a crashed child is still recorded)."""
        if state not in RunState.ALL:
            raise ValueError(f"unknown run state {state!r}")
        atomic_write_text(self.path / _STATUS, json.dumps(
            {"state": state, "kind": kind, "message": message, "pid": pid}))

    def status(self) -> Status:
        try:
            data = json.loads((self.path / _STATUS).read_text(encoding="utf-8"))
            return Status(str(data["state"]), str(data.get("kind", "")), str(data.get("message", "")),
                          int(data.get("pid", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if self.checkpoint_dirs():  # a run from before the status was kept, stopped after a checkpoint
            return Status(RunState.CANCELLED)
        return Status(RunState.CREATED)

    @property
    def state(self) -> str:
        if self.finished():
            return RunState.FINISHED
        status = self.status()
        if status.state == RunState.RUNNING and not _alive(status.pid):
            return RunState.FAILED  # its process is gone without saying so: killed, or the app was
        if status.state == RunState.FINISHED:  # said so, but the adapter is gone
            return RunState.FAILED
        return status.state

    @property
    def resumable(self) -> bool:
        return self.state in (RunState.CANCELLED, RunState.FAILED) and bool(self.checkpoint_dirs())

    def describe(self) -> str:
        """One line about the run, for the list of past runs."""
        results = self.results()
        if self.state == RunState.FINISHED and "steps" in results:
            loss = results.get("final_train_loss")
            best = results.get("best_val_loss")
            text = f"finished, {results['steps']} steps"
            text += f", loss {loss:.3f}" if isinstance(loss, (int, float)) else ""
            return text + (f", best validation {best:.3f}" if isinstance(best, (int, float)) else "")
        if self.state == RunState.RUNNING:
            return "training now"
        step = self.last_checkpoint_step()
        if step is not None and self.resumable:
            return f"stopped after step {step}; can be resumed"
        return "not started or stopped before its first checkpoint"

    def details(self) -> str:
        """The run's settings and results (with the before/after answers) as plain text."""
        config = self.config_data()
        lines = []
        if config:
            keys = ("preset", "method", "base_model", "dataset", "lora_r", "lora_alpha", "learning_rate",
                    "batch_size", "gradient_accumulation", "epochs", "max_steps", "seq_len", "seed")
            lines.append("Settings: " + ", ".join(f"{k} {config[k]}" for k in keys
                                                   if k in config and config[k] != ""))
        results = self.results()
        if results:
            lines.append(f"Result: {self.describe()}; {results.get('tokens', 0):,} tokens in "
                         f"{duration(results.get('seconds', 0))}")
            for row in results.get("evaluation", {}).get("rows", []):
                lines += [f"[{row['user_type']}] {row['question']}", f"  before: {row['base']}",
                          f"  after:  {row['tuned']}", f"  expected: {row['reference']}"]
        return "\n".join(lines) or "No details saved for this run."


def duration(seconds: float) -> str:
    """A time span in words a person reads at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def runs_root() -> Path:
    """The app's folder of training runs."""
    from muse_desktop.base.paths import user_dirs

    return user_dirs().data / "runs"


def list_runs(folder: str | os.PathLike[str] | None = None) -> list[RunFolder]:
    """The runs in ``folder`` (default: the app's), newest first."""
    folder = Path(folder) if folder is not None else runs_root()
    if not folder.is_dir():
        return []
    return [RunFolder(p) for p in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True)]
