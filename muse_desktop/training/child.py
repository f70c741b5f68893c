"""Training in a child process: the recipe's events travel as JSON lines on stdout.

The app and the CLI call :func:`run_training`, which starts
``python -m muse_desktop.training.child`` and turns its lines back into events. A
cancel is a message, not a signal (on Windows ``terminate()`` is a hard kill): the
parent leaves a cancel request in the run folder, every child process polls for
it, saves a checkpoint and stops (the GPU memory is freed with the process). If the child dies any other way — killed, crashed, out
of memory at the system level — the parent says so, and Resume continues from the
last checkpoint. The child also appends every event to the events file in the run
folder, which is how past runs are shown later. The folder's files and states are
:class:`~muse_desktop.training.runfolder.RunFolder`'s.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from muse_desktop.base.events import CancelToken, Error, Event, from_json, to_json
from muse_desktop.training.config import ConfigError, TrainConfig, TrainingError
from muse_desktop.training.runfolder import RunFolder, RunState

EXIT_CANCELLED = 3
POLL_S = 0.2


def default_run_dir(config: TrainConfig) -> Path:
    from muse_desktop.training.runfolder import runs_root

    label = config.name or config.preset or config.method
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)
    return runs_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}"


def child_command(run_dir: Path) -> list[str]:
    from muse_desktop.base.process import module_command

    return module_command("muse_desktop.training.child", "--run-dir", str(run_dir))


def run_training(config: TrainConfig | None, run_dir: str | Path, cancel: CancelToken | None = None,
                 on_start=None) -> Iterator[Event]:
    """Start (``config`` given) or resume (``config`` None) the run in ``run_dir``; yield its events."""
    run = RunFolder.create(run_dir, config) if config is not None else RunFolder.open(run_dir)
    run_dir = run.path
    run.clear_cancel()  # an earlier run's cancel must not stop this one
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    options = {}
    if os.name == "nt":
        options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    with open(run.log_path, "ab") as log:
        process = subprocess.Popen(child_command(run_dir), stdout=subprocess.PIPE, stderr=log,
                                   stdin=subprocess.DEVNULL, env=env, **options)
    run.mark(RunState.RUNNING, pid=process.pid)
    if on_start is not None:
        on_start(process)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode("utf-8", errors="replace"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    failure: Error | None = None
    asked_to_stop = False
    try:
        while True:
            if cancel is not None and cancel.cancelled and not asked_to_stop:
                asked_to_stop = True
                run.request_cancel()  # the child checkpoints and exits
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                event = from_json(line)
            except (ValueError, KeyError, TypeError):
                continue  # a stray print from a library
            if isinstance(event, Error):
                failure = event
                continue
            yield event
        code = process.wait()
        run.clear_cancel()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if failure is not None:
        run.mark(RunState.CANCELLED if failure.kind == "cancelled" else RunState.FAILED, failure.kind,
                 failure.message)
        raise TrainingError(failure.message, failure.kind)
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"ended with exit code {code}"
        tail = _last_log_line(run.log_path)
        message = (f"The training process {how}" + (f" ({tail})" if tail else "") +
                   ". Resume continues from the last checkpoint.")
        run.mark(RunState.FAILED, "crashed", message)
        raise TrainingError(message, "crashed")
    run.mark(RunState.FINISHED)


def _last_log_line(path: Path) -> str:
    try:
        text = path.read_bytes()[-4000:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def read_events(run_dir: str | Path) -> list[Event]:
    """All events a run has written so far (for the list of past runs and their curves)."""
    path = RunFolder(run_dir).events_path
    events = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    events.append(from_json(line))
                except (ValueError, KeyError, TypeError):
                    continue  # the last line of a killed run may be cut short
    except OSError:
        pass
    return events


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Run one training job (started by MUsE Desktop).")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    run = RunFolder(args.run_dir)
    token = CancelToken()
    signal.signal(signal.SIGTERM, lambda *_: token.cancel())
    signal.signal(signal.SIGINT, lambda *_: token.cancel())

    def watch_for_cancel() -> None:
        while not token.cancelled:
            if run.cancel_requested():
                token.cancel()
                return
            time.sleep(POLL_S)

    threading.Thread(target=watch_for_cancel, daemon=True).start()
    main_process = int(os.environ.get("RANK", "0")) == 0
    events_file = open(run.events_path, "a", encoding="utf-8") if main_process else None

    def emit(event: Event) -> None:
        line = to_json(event)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if events_file is not None:
            events_file.write(line + "\n")
            events_file.flush()

    from muse_desktop.data.datasets import DatasetError

    try:
        config = run.config()  # as stored when the run was created: no preset is read again
        from muse_desktop.training.recipe import train

        if config.dpo_pairs:
            from muse_desktop.training.dpo import train_dpo as train
        try:
            for event in train(config, run.path, token):
                emit(event)
        except TrainingError as exc:
            emit(Error(str(exc), exc.kind))
            return EXIT_CANCELLED if exc.kind == "cancelled" else 4
    except (ConfigError, DatasetError, OSError) as exc:
        emit(Error(str(exc)))
        return 2
    except Exception as exc:  # reported, with the traceback in the run's log
        traceback.print_exc()
        emit(Error(f"Training failed: {type(exc).__name__}: {exc}"))
        return 1
    finally:
        if events_file is not None:
            events_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
