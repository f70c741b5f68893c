"""A DPO stage on the recipe's machinery: preference pairs from preference mode, LoRA on the policy.

Direct Preference Optimization (Rafailov et al., 2023): with the frozen base as the
reference (the LoRA adapter switched off), minimise
``-log σ(β · ((log π(chosen) − log π_ref(chosen)) − (log π(rejected) − log π_ref(rejected))))``
where each log-probability is summed over the answer tokens and ``<|end|>``, encoded
by the same prompt contract as everything else. The run folder, child process,
events and export are the recipe's; a config selects this stage with ``dpo_pairs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from muse_desktop.datasets import Example
from muse_desktop.events import CancelToken, Done, Event, Log, Metric, Progress
from muse_desktop.fileio import atomic_write_text
from muse_desktop.preferences import read_pairs
from muse_desktop.prompting.contract import IGNORE_INDEX, Role, Turn
from muse_desktop.prompting.hf import HFTokenizer
from muse_desktop.training.config import ADAPTER, CONFIG_FILE, RESULTS, TrainConfig
from muse_desktop.training.recipe import TrainingError, collate, load_model, make_optimizer, pick_device, pick_dtype


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

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=1))
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
    encoded = [encode_pair(pair, wrapped, template) for pair in pairs]
    model = load_model(config, device, dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, trainable)
    total = config.max_steps or max(1, int(len(encoded) / config.batch_size * config.epochs + 0.999))
    yield Log(f"DPO on {len(encoded)} preference pairs, β = {config.dpo_beta}, {total} steps")
    generator = torch.Generator().manual_seed(config.seed)
    last_loss, started = None, time.monotonic()

    def margins(rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chosen = collate([r[0] for r in rows], pad_id, device)
        rejected = collate([r[1] for r in rows], pad_id, device)
        with torch.no_grad(), model.disable_adapter():
            ref = sequence_logprobs(model, chosen) - sequence_logprobs(model, rejected)
        policy = sequence_logprobs(model, chosen) - sequence_logprobs(model, rejected)
        return policy, ref, policy - ref

    with torch.no_grad():
        model.eval()
        start_margin = float(margins(encoded)[0].mean())
        model.train()
    for step in range(total):
        if cancel is not None and cancel.cancelled:
            raise TrainingError("DPO was stopped.", "cancelled")
        order = torch.randperm(len(encoded), generator=generator)[: config.batch_size].tolist()
        policy, _ref, advantage = margins([encoded[i] for i in order])
        loss = -F.logsigmoid(config.dpo_beta * advantage).mean()
        if not torch.isfinite(loss):
            raise TrainingError(f"The DPO loss became {float(loss)} at step {step + 1}.", "nan")
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        last_loss = float(loss)
        yield Progress(step + 1, total, "steps", "DPO")
        for name, value in (("dpo_loss", float(loss)), ("margin", float(policy.mean()))):
            yield Metric(name, value, step + 1)
    model.eval()
    with torch.no_grad():
        end_margin = float(margins(encoded)[0].mean())
    model.save_pretrained(str(run_dir / ADAPTER), safe_serialization=True)
    tokenizer.save_pretrained(str(run_dir / ADAPTER))
    results = {"stage": "dpo", "steps": total, "pairs": len(encoded), "margin_start": start_margin,
               "margin_end": end_margin, "seconds": time.monotonic() - started,
               "final_train_loss": last_loss, "config": config.to_dict()}
    atomic_write_text(run_dir / RESULTS, json.dumps(results, indent=1))
    yield Done(f"DPO finished: the chosen-minus-rejected log-probability margin went from {start_margin:.2f} "
               f"to {end_margin:.2f}", str(run_dir / ADAPTER),
               {k: v for k, v in results.items() if k != "config"})
