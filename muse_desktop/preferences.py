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

from muse_desktop.fileio import atomic_write_text


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


def export_instruction_data(store, path: str | Path) -> int:
    """Question → best answer as MUsE triples (JSONL); returns how many."""
    rows = [{"user_type": p["user_type"], "question": p["prompt"], "answer": p["candidates"][p["best"]]["text"]}
            for p in store.preferences()]
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)


def export_pairs(store, path: str | Path) -> int:
    """Preference pairs (chosen = best, rejected = worst) as JSONL for DPO; returns how many."""
    rows = [{"user_type": p["user_type"], "context": p["context"], "question": p["prompt"],
             "chosen": p["candidates"][p["best"]]["text"], "rejected": p["candidates"][p["worst"]]["text"],
             "reason": p["reason"]} for p in store.preferences()]
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
