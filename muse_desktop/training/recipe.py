"""The training recipe: LoRA or QLoRA with PEFT, resumable exactly, reporting events.

:func:`train` is a generator of events (progress, metrics, logs, done). It is run in a
child process (:mod:`muse_desktop.training.child`) by the app and the CLI, and under
``accelerate launch`` for several processes. Everything needed to continue a run
exactly — adapter weights, optimizer state, the position in the data, the random
number generator — is saved in each checkpoint as safetensors plus JSON (nothing is
pickled), so a run that was cancelled, crashed or killed continues as if it had not
stopped: the data order comes from the seed and the epoch, the learning rate from
the step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from muse_desktop.data.datasets import Format, Report, load_dataset
from muse_desktop.base.events import CancelToken, Done, Event, Log, Metric, Progress
from muse_desktop.base.prompting.contract import IGNORE_INDEX, Role
from muse_desktop.base.prompting.hf import HFTokenizer
from muse_desktop.training.config import Method, TrainConfig, TrainingError
from muse_desktop.training.runfolder import RunFolder


# --- data ----------------------------------------------------------------------------------


@dataclass
class Prepared:
    train: list[tuple[list[int], list[int]]]
    val: list[tuple[list[int], list[int]]]
    eval_items: list[tuple[str | None, str, str]]  # (user type, question, reference answer)
    report: Report


def _blocks(rows: list[tuple[list[int], list[int]]], size: int) -> list[tuple[list[int], list[int]]]:
    """Join rows end to end and cut them into blocks of ``size`` tokens (packing)."""
    ids = [t for row in rows for t in row[0]]
    labels = [t for row in rows for t in row[1]]
    return [(ids[i:i + size], labels[i:i + size]) for i in range(0, len(ids), size)
            if any(label != IGNORE_INDEX for label in labels[i + 1:i + size])]


def prepare_data(config: TrainConfig, tokenizer) -> Prepared:
    """Read, check and tokenize the dataset through the prompt contract; split it by the seed."""
    wrapped = HFTokenizer(tokenizer)
    template = config.instruction_template or None
    report = load_dataset(config.dataset, config.dataset_format or None, wrapped, cutoff=config.seq_len,
                          template=template, train_on=config.train_on)
    report.require_examples()
    examples = report.examples
    order = list(range(len(examples)))
    random.Random(config.seed).shuffle(order)
    n_val = int(round(len(examples) * config.validation_split))
    if config.validation_split > 0 and n_val == 0 and len(examples) >= 5:
        n_val = 1
    n_val = min(n_val, len(examples) - 1)
    val_examples = [examples[i] for i in order[:n_val]]
    train_examples = [examples[i] for i in sorted(order[n_val:])]

    def encoded(items):
        out = []
        for example in items:
            enc = example.encoded(wrapped, template, config.train_on)
            out.append((enc.input_ids, enc.labels))
        return out

    train, val = encoded(train_examples), encoded(val_examples)
    if report.format == Format.TEXT or config.batching == "pack":
        train = _blocks(train, config.seq_len)
        val = _blocks(val, config.seq_len) if val else val
    eval_items = [
        (ex.user_type, ex.turns[0].content, ex.turns[-1].content)
        for ex in val_examples
        if ex.turns and len(ex.turns) == 2 and ex.turns[-1].role == Role.ASSISTANT
    ][: config.eval_questions]
    return Prepared(train, val, eval_items, report)


def epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation fixed by the seed and the epoch number."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_items, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n_items, batch_size)]


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest row (right padding, masked, labels ignored)."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(labs)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# --- schedule ------------------------------------------------------------------------------


def lr_at(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based): warmup, then the schedule."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    if config.scheduler == "constant":
        return config.learning_rate
    span = max(1, total - config.warmup_steps - 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    floor = min(config.min_learning_rate, config.learning_rate)
    if config.scheduler == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (config.learning_rate - floor) * shape


# --- model -------------------------------------------------------------------------------------


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def pick_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    wanted = config.precision
    if wanted == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[wanted]


def layers_to_train(config: TrainConfig, n_layers: int) -> list[int] | None:
    last = config.trained_layers(n_layers)
    return None if last >= n_layers else list(range(n_layers - last, n_layers))


def load_model(config: TrainConfig, device: torch.device, dtype: torch.dtype):
    """The base model (4-bit NF4 for QLoRA) with fresh LoRA weights, seeded."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    base = Path(config.base_model)
    if base.is_dir() and not any(base.glob("*.safetensors")):
        pickles = sorted(p.name for p in base.glob("*.bin"))
        raise TrainingError(
            f"The base model in {base} has no .safetensors weights"
            + (f" (only {', '.join(pickles)}: pickle files, which can run code when loaded)" if pickles else "")
            + ". MUsE loads weights only from safetensors files.")
    # safetensors only: a .bin checkpoint is a pickle, and loading one can run code.
    options = {"dtype": dtype, "use_safetensors": True}
    if config.method == Method.QLORA:
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        if device.type == "cuda":
            options["device_map"] = {"": device.index or 0}
    model = AutoModelForCausalLM.from_pretrained(config.base_model, **options)
    if config.start_adapter:
        model = merge_start_adapter(model, config.start_adapter)
    if config.method == Method.QLORA:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif device.type != "cpu":
        model.to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    torch.manual_seed(config.seed)  # the LoRA A matrices come from this
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), use_rslora=config.use_rslora,
        layers_to_transform=layers_to_train(config, model.config.num_hidden_layers),
        layers_pattern="layers" if config.train_last_layers else None,
        bias="none", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def merge_start_adapter(model, folder: str):
    """The base with the adapter in ``folder`` merged in, in memory (PEFT's own merge): the run's new
    add-on is trained on top of it, and a resume merges it again the same way."""
    from peft import PeftModel

    path = Path(folder)
    if not (path / "adapter_model.safetensors").is_file():  # never a pickle (.bin)
        raise TrainingError(f"The add-on to start from is not in {path} (no adapter_model.safetensors there).",
                            advice="Choose the model again, or train without starting from an add-on.")
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload()


def make_optimizer(config: TrainConfig, params):
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if config.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, lr=config.learning_rate, weight_decay=config.weight_decay)


# --- checkpoints (safetensors + JSON; nothing pickled) -------------------------------------


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into tensors (for safetensors) and the rest (JSON).

    Works for nested states too (bitsandbytes keeps its 8-bit state in a sub-dict):
    each tensor is replaced by ``{"__tensor__": name}``.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value, path: str):
        if torch.is_tensor(value):
            tensors[path] = value.detach().to("cpu").clone().contiguous()
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {"__dict__": [[key, walk(item, f"{path}/{key}")] for key, item in value.items()]}
        if isinstance(value, (list, tuple)):
            return [walk(item, f"{path}/{i}") for i, item in enumerate(value)]
        return value

    return tensors, walk(state, "o")


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta, device) -> dict:
    def walk(value):
        if isinstance(value, dict) and "__tensor__" in value:
            tensor = tensors[value["__tensor__"]]
            # AdamW keeps "step" on the CPU; everything else lives with the parameters.
            return tensor if value["__tensor__"].endswith("/step") else tensor.to(device)
        if isinstance(value, dict) and "__dict__" in value:
            return {key: walk(item) for key, item in value["__dict__"]}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(meta)


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # index of the next batch within the epoch (this process's share)
    tokens: int = 0
    best_val: float | None = None
    bad_evals: int = 0
    elapsed_s: float = 0.0
    history: list[dict] = field(default_factory=list)
    finished: bool = False


def save_checkpoint(run_dir: Path, model, optimizer, position: Position, rng: torch.Tensor,
                    cuda_rng: list[torch.Tensor] | None, keep: int) -> Path:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    run = RunFolder(run_dir)
    folder = run.checkpoint_dir(position.step)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    adapter = {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(adapter, tmp / "adapter.safetensors")
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")
    randomness = {"cpu": rng}
    for i, state in enumerate(cuda_rng or []):
        randomness[f"cuda{i}"] = state
    save_file(randomness, tmp / "rng.safetensors")
    (tmp / "position.json").write_text(json.dumps(position.__dict__), encoding="utf-8")
    for child in tmp.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    for old in run.checkpoint_dirs()[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = [p for p in RunFolder(run_dir).checkpoint_dirs() if (p / "position.json").is_file()]
    return found[-1] if found else None


def load_checkpoint(folder: Path, model, optimizer, device) -> tuple[Position, torch.Tensor, list | None]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, {k: v.to(device) for k, v in load_file(folder / "adapter.safetensors").items()})
    meta = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    optimizer.load_state_dict(_unflatten_optimizer(load_file(folder / "optimizer.safetensors"), meta, device))
    randomness = load_file(folder / "rng.safetensors")
    cuda = [randomness[k] for k in sorted(randomness) if k.startswith("cuda")] or None
    position = Position(**json.loads((folder / "position.json").read_text(encoding="utf-8")))
    return position, randomness["cpu"], cuda


# --- helpers ---------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text


OOM_ADVICE = ("The computer ran out of memory while training. Try a smaller batch_size (with more "
              "gradient_accumulation), a shorter seq_len, gradient_checkpointing, or the QLoRA preset. "
              "The last checkpoint is kept: Resume continues from it.")


@contextlib.contextmanager
def training_errors():
    """Around a stage's loop: an out-of-memory error of any kind becomes TrainingError with the advice."""
    try:
        yield
    except TrainingError:
        raise
    except Exception as exc:
        if _is_oom(exc):
            raise TrainingError(OOM_ADVICE, "out-of-memory") from None
        raise


def finish_checkpoint(position: Position, checkpoint_now) -> None:
    """Every stage ends the same: the last checkpoint, marked finished (a resume then only finishes)."""
    position.finished = True
    checkpoint_now()


def save_final_adapter(run: RunFolder, model, tokenizer) -> Path:
    """The final adapter, with its tokenizer, where export looks for it."""
    model.save_pretrained(str(run.adapter), safe_serialization=True)
    tokenizer.save_pretrained(str(run.adapter))
    return run.adapter


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, AttributeError):
        return 0.0


@torch.no_grad()
def validation_loss(model, rows, batch_size: int, pad_id: int, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size], pad_id, device)
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        if n:
            total += float(model(**batch).loss) * n
            count += n
    model.train()
    return total / max(count, 1)


# --- the run ---------------------------------------------------------------------------------


def train(config: TrainConfig, run_dir: str | Path, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Train (or continue training) in ``run_dir``; yields events, ends with Done (path: the adapter)."""
    from transformers import AutoTokenizer

    accelerator = None
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), 0
    if world > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        world, rank = accelerator.num_processes, accelerator.process_index
    main = rank == 0
    device = accelerator.device if accelerator else pick_device()
    dtype = pick_dtype(config, device)
    # The config is checked and stored once, when the run is made (here only for a direct call).
    run = RunFolder.prepare(run_dir, config) if main else RunFolder(run_dir)
    run_dir = run.path

    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    data = prepare_data(config, tokenizer)
    if main:
        yield Log(data.report.summary())
        for problem in data.report.problems[:20]:
            yield Log(str(problem), "warning")
        if data.report.skipped:
            skipped = data.report.skipped
            yield Log(f"{skipped} {'row was' if skipped == 1 else 'rows were'} skipped (reasons above); "
                      f"training on {len(data.report.examples)}.", "warning")

    model = load_model(config, device, dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, trainable)
    n_params = sum(p.numel() for p in trainable)

    n_batches = len(epoch_batches(len(data.train), config.batch_size, config.seed, 0))
    local_batches = n_batches // world if world > 1 else n_batches
    if local_batches == 0:
        raise TrainingError(f"Too little data for {world} processes with batch size {config.batch_size}.")
    steps_per_epoch = math.ceil(local_batches / config.gradient_accumulation)
    total = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    if main:
        yield Log(f"{len(data.train)} training and {len(data.val)} validation rows; {n_params:,} trainable "
                  f"weights; {total} steps of {config.batch_size}×{config.gradient_accumulation}×{world} rows "
                  f"on {device.type} in {str(dtype).removeprefix('torch.')}"
                  + (" with a 4-bit NF4 base" if config.method == Method.QLORA else "")
                  + (f" in {world} processes" if world > 1 else ""))

    position = Position()
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        position, rng, cuda_rng = load_checkpoint(checkpoint, model, optimizer, device)
        torch.set_rng_state(rng)
        if cuda_rng and device.type == "cuda":
            torch.cuda.set_rng_state_all(cuda_rng)
        if main:
            yield Log(f"Resuming from {checkpoint.name}: step {position.step} of {total}")
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 and device.type == "cuda" else None

    stop_reason = "finished" if position.finished else ""
    started = time.monotonic() - position.elapsed_s
    tokens_at_start, clock = position.tokens, time.monotonic()
    eval_every = config.eval_steps or steps_per_epoch
    model.train()

    def record(name: str, value: float) -> Metric:
        position.history.append({"name": name, "value": value, "step": position.step})
        return Metric(name, value, position.step)

    def rng_now() -> tuple[torch.Tensor, list | None]:
        return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if device.type == "cuda" else None)

    def checkpoint_now(rng: tuple[torch.Tensor, list | None]) -> None:
        # ``rng`` must be the generator's state at ``position``: a cancel mid-window
        # rewinds to the window's start, so the window is replayed with the same dropout.
        if main:
            position.elapsed_s = time.monotonic() - started
            save_checkpoint(run_dir, _unwrap(model, accelerator), optimizer, position, rng[0], rng[1],
                            max(1, config.save_total_limit))

    with training_errors():
        while not stop_reason and position.step < total:
            batches = epoch_batches(len(data.train), config.batch_size, config.seed, position.epoch)
            if world > 1:
                batches = batches[: local_batches * world][rank::world]
            while position.batch < len(batches) and position.step < total and not stop_reason:
                # One optimizer step over a window of gradient_accumulation batches.
                window_rng = rng_now()
                window = batches[position.batch: position.batch + config.gradient_accumulation]
                losses, tokens = [], 0
                for indices in window:
                    if cancel is not None and cancel.cancelled:
                        checkpoint_now(window_rng)
                        raise TrainingError("Training was stopped. Resume continues from this point.", "cancelled")
                    batch = collate([data.train[i] for i in indices], pad_id, device)
                    tokens += int(batch["attention_mask"].sum())
                    with torch.autocast(device.type, dtype=dtype, enabled=scaler is not None):
                        loss = model(**batch).loss
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"The training loss became {float(loss)} at step {position.step + 1}. The learning rate "
                            "may be too high, or the data has a problem. The last checkpoint is kept.", "nan")
                    losses.append(float(loss.detach()))
                    scaled = loss / len(window)
                    if scaler is not None:
                        scaler.scale(scaled).backward()
                    elif accelerator is not None:
                        accelerator.backward(scaled)
                    else:
                        scaled.backward()
                lr = lr_at(config, position.step, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                position.step += 1
                position.batch += len(window)
                position.tokens += tokens * world
                train_loss = sum(losses) / len(losses)
                if main:
                    now = time.monotonic()
                    speed = (position.tokens - tokens_at_start) / max(now - clock, 1e-9)
                    yield Progress(position.step, total, "steps", f"epoch {position.epoch + 1}")
                    if position.step % max(1, config.logging_steps) == 0 or position.step == total:
                        yield record("train_loss", train_loss)
                        yield record("learning_rate", lr)
                        yield record("tokens_per_s", speed)
                        yield record("memory_gb", memory_gb(device))
                if data.val and (position.step % eval_every == 0 or position.step == total):
                    val = validation_loss(model, data.val, config.batch_size, pad_id, device)
                    if main:
                        yield record("val_loss", val)
                        yield record("val_perplexity", math.exp(min(val, 50.0)))
                    if position.best_val is None or val < position.best_val - 1e-6:
                        position.best_val, position.bad_evals = val, 0
                        if main:
                            _unwrap(model, accelerator).save_pretrained(str(run.best), safe_serialization=True)
                    else:
                        position.bad_evals += 1
                        if config.early_stopping_patience and position.bad_evals >= config.early_stopping_patience:
                            stop_reason = (f"Early stopping: the validation loss has not improved for "
                                           f"{position.bad_evals} evaluations (best {position.best_val:.4f}).")
                if config.target_loss and train_loss < config.target_loss:
                    stop_reason = f"Reached the target loss ({train_loss:.4f} < {config.target_loss})."
                if config.save_steps and position.step % config.save_steps == 0:
                    checkpoint_now(rng_now())
            if position.batch >= len(batches):
                position.epoch += 1
                position.batch = 0

    finish_checkpoint(position, lambda: checkpoint_now(rng_now()))
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if not main:
        return
    if stop_reason and stop_reason != "finished":
        yield Log(stop_reason)
    final = _unwrap(model, accelerator)
    adapter = save_final_adapter(run, final, tokenizer)
    results = {
        "steps": position.step,
        "epochs": position.epoch + position.batch / max(local_batches, 1),
        "final_train_loss": next((h["value"] for h in reversed(position.history) if h["name"] == "train_loss"), None),
        "best_val_loss": position.best_val,
        "tokens": position.tokens,
        "seconds": time.monotonic() - started,
        "stopped": stop_reason or "finished",
    }
    if data.eval_items and config.eval_questions:
        from muse_desktop.training.evaluate import before_after

        yield Log(f"Answering {len(data.eval_items)} held-out questions before and after training…")
        results["evaluation"] = before_after(final, tokenizer, data.eval_items, config, device)
    run.write_results(results)
    yield Done(f"Training finished after {position.step} steps; the adapter is in {adapter}", str(adapter), results)


def _unwrap(model, accelerator):
    return accelerator.unwrap_model(model) if accelerator is not None else model
