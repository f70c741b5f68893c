"""Preference mode: several candidate answers to one question, the person picks the best and the worst.

The research grid (personalised responses from preferences): two framings × two
temperatures — the MUsE instruction for the chosen user type and a plain prompt,
each at temperature 1.0 (varied) and 0.1 (steady). The records become training
data two ways: instruction data (question → best answer, MUsE triples) and
preference pairs (chosen = best, rejected = worst) for DPO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from muse_desktop.base.fileio import atomic_write_text


class Framing:
    MUSE = "muse"  # the MUsE instruction for the user type
    PLAIN = "plain"  # no instruction at all


@dataclass(frozen=True)
class CandidateSpec:
    framing: str
    temperature: float

    def label(self) -> str:
        return f"{'worded for you' if self.framing == Framing.MUSE else 'plain'}, {'varied' if self.temperature >= 0.5 else 'steady'}"


DEFAULT_GRID = (CandidateSpec(Framing.MUSE, 1.0), CandidateSpec(Framing.MUSE, 0.1),
                CandidateSpec(Framing.PLAIN, 1.0), CandidateSpec(Framing.PLAIN, 0.1))


def parse_grid(text: str) -> tuple[CandidateSpec, ...]:
    """A grid from settings text like ``"muse:1.0, muse:0.1, plain:1.0, plain:0.1"`` (empty: the default)."""
    if not text.strip():
        return DEFAULT_GRID
    specs = []
    for part in text.split(","):
        framing, _, temperature = part.strip().partition(":")
        if framing not in (Framing.MUSE, Framing.PLAIN):
            raise ValueError(f"'{part.strip()}': the framing is muse or plain")
        try:
            value = float(temperature)
        except ValueError:
            raise ValueError(f"'{part.strip()}': the temperature is a number, e.g. muse:0.7") from None
        if not 0 <= value <= 2:
            raise ValueError(f"'{part.strip()}': the temperature goes from 0 to 2")
        specs.append(CandidateSpec(framing, value))
    if not 2 <= len(specs) <= 6:
        raise ValueError("Preference mode shows 2 to 6 candidates.")
    return tuple(specs)


def candidate_requests(specs, user_type: str, turns, template=None, seeds=None) -> list:
    """One chat request per grid cell: worded for ``user_type`` or plain, at the cell's temperature.

    Each gets its own seed (from ``seeds``, a ``random.Random``; the system's by default)
    and the user type's other sampling settings, ready for ``ChatEngine.generate_batch``.
    """
    import random

    from muse_desktop.chat.engine import Request, default_sampling

    seeds = seeds or random.SystemRandom()
    requests = []
    for spec in specs:
        sampling = default_sampling(user_type)
        sampling.temperature = spec.temperature
        sampling.seed = seeds.randrange(2**31)
        requests.append(Request(user_type if spec.framing == Framing.MUSE else None, list(turns), template, sampling))
    return requests


def candidate_records(candidates: list[dict], specs, requests) -> list[dict] | None:
    """What the store keeps of a finished round (text, framing, temperature, seed); None if it was stopped."""
    if any(result["stopped"] == "cancelled" for result in candidates):
        return None
    return [{"text": result["text"].strip(), "framing": spec.framing, "temperature": spec.temperature,
             "seed": request.sampling.seed} for result, spec, request in zip(candidates, specs, requests, strict=True)]


def export_instruction_data(store, path: str | Path, profile_id: int | None = None) -> int:
    """Question → best answer as MUsE triples (JSONL), everyone's or one person's; returns how many."""
    rows = [{"user_type": p["user_type"], "question": p["prompt"], "answer": p["candidates"][p["best"]]["text"]}
            for p in store.preferences(profile_id)]
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)


def export_pairs(store, path: str | Path, profile_id: int | None = None) -> int:
    """Preference pairs (chosen = best, rejected = worst) as JSONL for DPO, everyone's or one person's."""
    rows = [{"user_type": p["user_type"], "context": p["context"], "question": p["prompt"],
             "chosen": p["candidates"][p["best"]]["text"], "rejected": p["candidates"][p["worst"]]["text"],
             "reason": p["reason"]} for p in store.preferences(profile_id)]
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)


def read_pairs(path: str | Path) -> list[dict]:
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not all(isinstance(row.get(k), str) and row[k].strip() for k in ("question", "chosen", "rejected")):
                raise ValueError("needs question, chosen and rejected")
        except ValueError as exc:
            raise ValueError(f"{Path(path).name} line {number}: {exc}") from None
        pairs.append(row)
    return pairs
