"""What the Trainer page asks the core for: the dataset check with its time estimate, the layer
choice as a spin box shows it, and a DPO run made ready from the chat's preferences.

The page only reads its widgets and shows the answers; nothing here imports Qt, and
torch/transformers only when a base model is there to count tokens with.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from muse_desktop.training.config import TrainConfig, config_from_dict
from muse_desktop.training.runfolder import RunFolder, duration

HALF = "half"  # train_last_layers: the second half of the layers, worked out by the recipe


def last_layers_shown(value: Any) -> int:
    """What a "number of last layers" box shows for a setting: "half" has no number, so 0 (the preset's own)."""
    return 0 if value == HALF else int(value)


def last_layers_chosen(shown: int, preset_value: Any) -> Any:
    """The setting from the box: 0 on a "half" preset keeps "half"; any other number is that number."""
    return HALF if shown == 0 and preset_value == HALF else int(shown)


def dataset_report(path: str, fmt: str | None, base: str, config: TrainConfig, seq_len: int | None = None) -> str:
    """Check a dataset (every unusable row with its line) and, with a base model, count tokens and
    estimate one pass on this computer; the text the page shows."""
    from muse_desktop.data.datasets import load_dataset

    tokenizer = None
    if base and Path(base, "config.json").is_file():
        from transformers import AutoTokenizer

        from muse_desktop.base.prompting.hf import HFTokenizer

        tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(base))
    report = load_dataset(path, fmt or None, tokenizer, cutoff=seq_len or config.seq_len)
    lines = [report.summary()]
    if report.user_types:
        common = sorted(report.user_types.items(), key=lambda item: (-item[1], item[0]))
        lines.append("Examples per user type: " + ", ".join(f"{name} {count:,}" for name, count in common[:12])
                     + (f" and {len(common) - 12} more user types" if len(common) > 12 else ""))
    if tokenizer is not None and report.tokens:
        from muse_desktop.training.hardware import epoch_seconds, probe, read_model_config

        seconds = epoch_seconds(report.tokens, config, read_model_config(base), probe())
        if seconds:
            lines.append("One pass over the data takes " + (
                "less than a second" if seconds < 1 else f"about {duration(seconds)}") + " on this computer.")
    elif tokenizer is None:
        lines.append("Choose the base model to count tokens and estimate the time.")
    if not report.examples:
        lines.append("No row can be used: training would refuse this file.")
    lines += [str(problem) for problem in report.problems]
    return "\n".join(lines)


def dpo_run(settings: dict, store, run_dir: str | Path | None = None) -> tuple[RunFolder, int]:
    """A DPO stage made ready: the recipe's settings, the chat's preference pairs in the run folder.

    The config names the pairs' real place from the start and is checked once, when the
    run is created; returns the run (start it with ``run_training(None, run.path)``) and how
    many pairs it learns from. Refuses (ValueError) before making anything when there are none.
    """
    from muse_desktop.evaluation.preferences import export_pairs
    from muse_desktop.training.child import default_run_dir

    if not store.preferences():
        raise ValueError("No preferences yet: in the chat, press “Choose from 4”, ask, and mark the best "
                         "and the worst answer.")
    config = config_from_dict({**settings, "dataset": "", "name": "dpo"})
    run = RunFolder(run_dir or default_run_dir(config))
    config.dpo_pairs = str(run.pairs_path)
    run = RunFolder.create(run.path, config)
    try:
        count = export_pairs(store, run.pairs_path)
    except (OSError, ValueError):
        shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run, count
