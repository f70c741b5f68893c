"""A DPO stage on the recipe's machinery: preference pairs from preference mode, LoRA on the policy.

Direct Preference Optimization (Rafailov et al., 2023): with the frozen base as the
reference (the LoRA adapter switched off; with ``start_adapter`` the base has that
add-on merged in, so a DPO stage after an SFT stage takes the SFT model as its
reference, as in the paper), minimise
``-log σ(β · ((log π(chosen) − log π_ref(chosen)) − (log π(rejected) − log π_ref(rejected))))``
where each log-probability is summed over the answer tokens and ``<|end|>``, encoded
by the same prompt contract as everything else. The run folder, child process,
events, checkpoints (exact resume, also after a cancel) and export are the recipe's,
and so are the schedule options: learning-rate scheduler and warmup, gradient
accumulation, and ``seq_len`` (longer pairs are left out and counted). A config
selects this stage with ``dpo_pairs``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from muse_desktop.data.datasets import Example
from muse_desktop.base.events import CancelToken, Done, Event, Log, Metric, Progress
from muse_desktop.evaluation.preferences import read_pairs
from muse_desktop.base.prompting.contract import IGNORE_INDEX, Role, Turn
from muse_desktop.base.prompting.hf import HFTokenizer
from muse_desktop.training.config import TrainConfig
from muse_desktop.training.recipe import (Position, TrainingError, collate, finish_checkpoint, latest_checkpoint,
                                          load_checkpoint, load_model, lr_at, make_optimizer, pick_device,
                                          pick_dtype, save_checkpoint, save_final_adapter, training_errors)
from muse_desktop.training.runfolder import RunFolder


def encode_pair(pair: dict, tokenizer, template) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
    context = [Turn(t["role"], t["content"]) for t in pair.get("context", [])]
    question = Turn(Role.USER, pair["question"])
    user_type = pair.get("user_type") or None
    out = []
    for answer in (pair["chosen"], pair["rejected"]):
        example = Example(0, user_type, context + [question, Turn(Role.ASSISTANT, answer)])
        encoded = example.encoded(tokenizer, template, "last")
        out.append((encoded.input_ids, encoded.labels))
    return out[0], out[1]


def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log p(label) over the trained positions of each row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    picked = torch.gather(F.log_softmax(logits.float(), dim=-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1)


def train_dpo(config: TrainConfig, run_dir: str | Path, cancel: CancelToken | None = None) -> Iterator[Event]:
    from transformers import AutoTokenizer

    run = RunFolder.prepare(run_dir, config)  # stored and checked once, when the run was made
    run_dir = run.path
    device = pick_device()
    dtype = pick_dtype(config, device)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    try:
        pairs = read_pairs(config.dpo_pairs)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"Cannot use the preference pairs: {exc}") from None
    if not pairs:
        raise TrainingError("There are no preference pairs to learn from.")
    wrapped = HFTokenizer(tokenizer)
    template = config.instruction_template or None
    encoded, too_long = [], 0
    for pair in pairs:
        chosen, rejected = encode_pair(pair, wrapped, template)
        if max(len(chosen[0]), len(rejected[0])) > config.seq_len:
            too_long += 1  # cutting it would cut the answers the preference is about
            continue
        encoded.append((chosen, rejected))
    if too_long:
        yield Log(f"{too_long} preference {'pair is' if too_long == 1 else 'pairs are'} longer than seq_len "
                  f"({config.seq_len} tokens) and {'was' if too_long == 1 else 'were'} left out.", "warning")
    if not encoded:
        raise TrainingError(f"Every preference pair is longer than seq_len ({config.seq_len} tokens).")
    model = load_model(config, device, dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, trainable)
    accumulation = max(1, config.gradient_accumulation)
    total = config.max_steps or max(1, math.ceil(len(encoded) / (config.batch_size * accumulation) * config.epochs))
    yield Log(f"DPO on {len(encoded)} preference pairs, β = {config.dpo_beta}, {total} steps of "
              f"{config.batch_size}×{accumulation} pairs, {config.scheduler} learning rate"
              + (f" after {config.warmup_steps} warmup steps" if config.warmup_steps else ""))

    def margins(rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chosen = collate([r[0] for r in rows], pad_id, device)
        rejected = collate([r[1] for r in rows], pad_id, device)
        with torch.no_grad(), model.disable_adapter():
            ref = sequence_logprobs(model, chosen) - sequence_logprobs(model, rejected)
        policy = sequence_logprobs(model, chosen) - sequence_logprobs(model, rejected)
        return policy, ref, policy - ref

    def rows_for(step: int, micro: int) -> list[int]:
        # Fixed by the seed and the position alone, so a resumed run draws the same pairs.
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step * accumulation + micro)
        return torch.randperm(len(encoded), generator=generator)[: config.batch_size].tolist()

    position = Position()
    start_margin = None
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        position, rng, cuda_rng = load_checkpoint(checkpoint, model, optimizer, device)
        torch.set_rng_state(rng)
        if cuda_rng and device.type == "cuda":
            torch.cuda.set_rng_state_all(cuda_rng)
        start_margin = next((h["value"] for h in position.history if h["name"] == "margin_start"), None)
        yield Log(f"Resuming from {checkpoint.name}: step {position.step} of {total}")
    if start_margin is None:
        with torch.no_grad():
            model.eval()
            start_margin = float(margins(encoded)[0].mean())
        position.history.append({"name": "margin_start", "value": start_margin, "step": 0})
    started = time.monotonic() - position.elapsed_s

    def checkpoint_now(rng: torch.Tensor, cuda_rng) -> None:
        position.elapsed_s = time.monotonic() - started
        save_checkpoint(run_dir, model, optimizer, position, rng, cuda_rng, max(1, config.save_total_limit))

    def rng_now():
        return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if device.type == "cuda" else None)

    model.train()
    with training_errors():
        while position.step < total:
            window_rng = rng_now()  # a cancel mid-window rewinds here: the window is replayed exactly
            losses, policies = [], []
            for micro in range(accumulation):
                if cancel is not None and cancel.cancelled:
                    checkpoint_now(*window_rng)
                    raise TrainingError("DPO was stopped. Resume continues from this point.", "cancelled")
                policy, _ref, advantage = margins([encoded[i] for i in rows_for(position.step, micro)])
                loss = -F.logsigmoid(config.dpo_beta * advantage).mean()
                if not torch.isfinite(loss):
                    raise TrainingError(f"The DPO loss became {float(loss)} at step {position.step + 1}.", "nan")
                (loss / accumulation).backward()
                losses.append(float(loss))
                policies.append(float(policy.mean()))
            lr = lr_at(config, position.step, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            position.step += 1
            dpo_loss = sum(losses) / len(losses)
            position.history = [h for h in position.history if h["name"] != "dpo_loss"]
            position.history.append({"name": "dpo_loss", "value": dpo_loss, "step": position.step})
            yield Progress(position.step, total, "steps", "DPO")
            for name, value in (("dpo_loss", dpo_loss), ("margin", sum(policies) / len(policies)),
                                ("learning_rate", lr)):
                yield Metric(name, value, position.step)
            if config.save_steps and position.step % config.save_steps == 0:
                checkpoint_now(*rng_now())
    finish_checkpoint(position, lambda: checkpoint_now(*rng_now()))
    model.eval()
    with torch.no_grad():
        end_margin = float(margins(encoded)[0].mean())
    adapter = save_final_adapter(run, model, tokenizer)
    last_loss = next((h["value"] for h in reversed(position.history) if h["name"] == "dpo_loss"), None)
    results = {"stage": "dpo", "steps": position.step, "pairs": len(encoded), "pairs_too_long": too_long,
               "margin_start": start_margin, "margin_end": end_margin, "seconds": time.monotonic() - started,
               "final_train_loss": last_loss}
    run.write_results(results)
    yield Done(f"DPO finished: the chosen-minus-rejected log-probability margin went from {start_margin:.2f} "
               f"to {end_margin:.2f}", str(adapter), results)
