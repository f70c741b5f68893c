"""The training configuration: one dataclass, presets as commented YAML files in resources/presets.

A config file names a preset and overrides what it wants::

    preset: muse-3
    base_model: ~/models/Phi-3-mini-128k-instruct
    dataset: my_triples.jsonl
    epochs: 2

Relative paths are taken from the config file's folder. Unknown keys are refused
with the closest known name, so a typo never silently trains with a default.
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muse_desktop.base.errors import MuseError
from muse_desktop.base.paths import resources_dir


# What a run folder holds is known to training/runfolder.py alone.


class ConfigError(MuseError, ValueError):
    """A config that cannot be used; the message names the key and why."""

    exit_code = 2  # the command line: what was given cannot be used


class TrainingError(MuseError, RuntimeError):
    """A run that cannot go on, in the training process or seen from the app that started it.

    ``kind`` is error, out-of-memory, nan, cancelled or crashed (the child process died).
    """

    exit_code = 2  # what the command line has always returned for it

    def __init__(self, message: str, kind: str = "error", *, advice: str = ""):
        super().__init__(message, advice=advice, kind=kind)


class Method:
    LORA = "lora"
    QLORA = "qlora"
    ALL = (LORA, QLORA)


OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
SCHEDULERS = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BATCHING = ("pad", "pack")  # pad: each batch padded to its longest row; pack: rows joined into full blocks


@dataclass
class TrainConfig:
    base_model: str = ""  # a Hugging Face checkpoint folder (safetensors)
    # A PEFT adapter folder merged into the base (in memory) before this run's add-on is trained:
    # the new add-on then goes on top of it (e.g. a person's add-on on top of MUsE's). LoRA only.
    start_adapter: str = ""
    dataset: str = ""
    dataset_format: str = ""  # empty: detected from the file
    preset: str = ""
    description: str = ""
    name: str = ""  # the run's name; empty: preset and time

    method: str = Method.LORA
    target_modules: list[str] = field(default_factory=lambda: ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
    lora_r: int = 64
    lora_alpha: float = 64
    lora_dropout: float = 0.05
    use_rslora: bool = False
    train_last_layers: Any = 0  # 0: all layers; N: only the last N; "half": the second half

    optimizer: str = "adamw"
    learning_rate: float = 1e-4
    min_learning_rate: float = 1e-6
    scheduler: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 3
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0  # 0 turns clipping off
    epochs: float = 1
    max_steps: int = 0  # > 0 overrides epochs
    seq_len: int = 1024
    batching: str = "pad"
    gradient_checkpointing: bool = False
    precision: str = "auto"
    seed: int = 42
    train_on: str = "assistant"  # or "all"
    instruction_template: str = ""

    validation_split: float = 0.1
    eval_steps: int = 0  # 0: at the end of every epoch
    save_steps: int = 50
    save_total_limit: int = 3
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0: never
    target_loss: float = 0.0  # stop when the training loss gets below this; 0: never
    eval_questions: int = 8  # held-out questions answered before and after training
    eval_max_new_tokens: int = 64
    logging_steps: int = 1

    dpo_pairs: str = ""  # a preference-pairs JSONL: this run is a DPO stage (training/dpo.py)
    dpo_beta: float = 0.1

    def validate(self) -> "TrainConfig":
        """Check values that a run would otherwise trip over much later; returns self."""
        problems = []
        if not self.base_model:
            problems.append("base_model is missing (a checkpoint folder)")
        if not self.dataset and not self.dpo_pairs:
            problems.append("dataset is missing (a .jsonl, .csv or .txt file)")
        if self.method not in Method.ALL:
            problems.append(f"method must be one of {', '.join(Method.ALL)}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler must be one of {', '.join(SCHEDULERS)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.batching not in BATCHING:
            problems.append(f"batching must be one of {', '.join(BATCHING)}")
        if self.train_on not in ("assistant", "all", "last"):
            problems.append("train_on must be assistant, last or all")
        if not self.target_modules:
            problems.append("target_modules is empty")
        for name in ("lora_r", "batch_size", "gradient_accumulation", "seq_len"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1")
        if self.learning_rate <= 0:
            problems.append("learning_rate must be above 0")
        if not (0 <= self.validation_split < 1):
            problems.append("validation_split must be between 0 and 1")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("set epochs or max_steps above 0")
        if not (self.train_last_layers == "half" or (isinstance(self.train_last_layers, int)
                                                    and self.train_last_layers >= 0)):
            problems.append("train_last_layers must be a number of layers or 'half'")
        if self.start_adapter and self.method == Method.QLORA:
            problems.append("start_adapter works with method lora (an adapter cannot be merged exactly into "
                            "a 4-bit base)")
        if problems:
            raise ConfigError("The training settings have problems: " + "; ".join(problems) + ".")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def trained_layers(self, n_layers: int) -> int:
        """How many of the last layers get LoRA weights: train_last_layers, "half" worked out, at most all."""
        last = self.train_last_layers
        if last == "half":
            return n_layers - n_layers // 2
        return min(int(last), n_layers) if last else n_layers


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
PATH_FIELDS = ("base_model", "dataset", "dpo_pairs", "start_adapter")


def _check_keys(data: dict, where: str) -> None:
    for key in data:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, sorted(FIELDS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown setting '{key}' in {where}.{hint}")


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} must be a mapping of settings (key: value).")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in (resources_dir() / "presets").glob("*.yaml"))


def load_preset(name: str) -> TrainConfig:
    path = (resources_dir() / "presets") / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"There is no preset '{name}'; choose one of {', '.join(preset_names())}.")
    data = _read_yaml(path)
    _check_keys(data, path.name)
    data.pop("preset", None)  # a preset does not build on another
    config = config_from_dict(data)
    config.preset = name
    return config


def config_from_dict(data: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
    """A config from a mapping; ``preset`` is applied first, then the other keys."""
    _check_keys(data, "the settings")
    config = load_preset(data["preset"]) if data.get("preset") else TrainConfig()
    defaults = TrainConfig()
    for key, value in data.items():
        kind = type(getattr(defaults, key))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif kind is float and isinstance(value, str):
            try:
                value = float(value)  # YAML reads 1e-4 (without a dot) as text
            except ValueError:
                raise ConfigError(f"Setting '{key}' must be a number, not '{value}'.") from None
        if key in PATH_FIELDS and value:
            value = os.path.expanduser(str(value))
            if base_dir is not None and not os.path.isabs(value):
                value = str((base_dir / value).resolve())
        setattr(config, key, value)
    return config


def config_from_resolved(data: dict[str, Any]) -> TrainConfig:
    """A config stored fully resolved (by a RunFolder): taken as it is, no preset applied again.

    The stored ``preset`` is only the name it was made from; its file may have changed or
    gone since, and the run is still the same run.
    """
    _check_keys(data, "the saved settings")
    config = TrainConfig()
    for key, value in data.items():
        setattr(config, key, value)
    return config


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML config file (with its preset) and check it."""
    path = Path(path)
    return config_from_dict(_read_yaml(path), path.parent.resolve()).validate()
