"""Blind comparison of models: answers in random order without names, rated 1–5 on three measures.

The MUsE evaluation: for each question and user type every model answers; a rater
sees the answers shuffled and unnamed, scores understandability, geniality and
applicability from 1 to 5 and may pick the best. Results are mean ± standard
deviation per model, measure and user type (the shape of MUsE's Figure 3), plus how
often each model's answer was picked as best, and a CSV for further analysis.
Raters, sessions and every score live in the SQLite store (:class:`muse_desktop.chat.store.Store`
owns the tables; this module owns the method).
"""

from __future__ import annotations

import csv
import io
import random
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CancelToken, Cancelled, Done, Event, Progress
from muse_desktop.base.fileio import atomic_write_text

MEASURES = ("understandability", "geniality", "applicability")
MIN_MODELS, MAX_MODELS = 2, 5


class CompareError(MuseError, ValueError):
    """A comparison that cannot be run as asked; the message says why."""


@dataclass(frozen=True)
class Contender:
    """One model (a GGUF, optionally with a GGUF LoRA adapter) and the name only the results show."""

    name: str
    path: str
    adapter: str = ""


def new_session(store, rater: str, contenders: list[Contender], seed: int | None = None) -> int:
    if not MIN_MODELS <= len(contenders) <= MAX_MODELS:
        raise CompareError(f"Choose {MIN_MODELS} to {MAX_MODELS} models to compare.")
    if not rater.strip():
        raise CompareError("Who is rating? Type a name.")
    return store.add_comparison_session(rater.strip(), [c.__dict__ for c in contenders],
                                        seed if seed is not None else random.randrange(2**31))


def session_contenders(store, session_id: int) -> list[Contender]:
    models, _seed = store.comparison_session(session_id)
    return [Contender(**c) for c in models]


def generate_answers(store_path: str | Path, session_id: int, questions: list[str], user_types: list[str],
                     settings=None, max_new_tokens: int = 200, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Every contender answers every (question, user type), greedily; stored in shuffled order.

    Opens its own database connection (it runs on a worker thread). One model is
    loaded at a time, so comparing five models needs the memory of one.
    """
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings, Sampling
    from muse_desktop.base.prompting import Turn
    from muse_desktop.chat.store import Store

    questions = [q.strip() for q in questions if q.strip()]
    user_types = [u.strip() for u in user_types if u.strip()]
    if not questions or not user_types:
        raise CompareError("Give at least one question and one user type.")
    store = Store(store_path)
    try:
        models, seed = store.comparison_session(session_id)
        contenders = [Contender(**c) for c in models]
        rounds = [(u, q) for u in user_types for q in questions]
        answers: dict[tuple[int, int], str] = {}
        total, done = len(rounds) * len(contenders), 0
        for index, contender in enumerate(contenders):
            adapters = [AdapterSpec(contender.adapter, 1.0)] if contender.adapter else []
            engine = ChatEngine(contender.path, settings or EngineSettings(), adapters)
            try:
                for number, (user_type, question) in enumerate(rounds):
                    if cancel is not None:
                        cancel.check()
                    sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)
                    result = [e for e in engine.generate(user_type, [Turn("user", question)], None, sampling,
                                                         cancel=cancel) if isinstance(e, Done)][-1]
                    if result.data["stopped"] == "cancelled":  # a cut-off answer is never rated as one
                        raise Cancelled("cancelled")
                    answers[(number, index)] = result.data["text"].strip()
                    done += 1
                    yield Progress(done, total, "answers", f"{contender.name}: {question[:40]}")
            finally:
                engine.close()
        shuffler = random.Random(seed)
        shown = []
        for number, (user_type, question) in enumerate(rounds):
            order = list(range(len(contenders)))
            shuffler.shuffle(order)
            shown += [(number, position, index, user_type, question, answers[(number, index)])
                      for position, index in enumerate(order)]
        store.add_comparison_answers(session_id, shown)
    finally:
        store.close()
    yield Done(f"{total} answers ready to rate", data={"session": session_id, "rounds": len(rounds)})


def rounds(store, session_id: int) -> list[list[dict]]:
    """The answers of each round in the order the rater sees them (model names left out)."""
    grouped: dict[int, list[dict]] = {}
    for row in store.comparison_answers(session_id):
        grouped.setdefault(row["round"], []).append(row)
    return [grouped[key] for key in sorted(grouped)]


def rate(store, answer_id: int, understandability: int, geniality: int, applicability: int,
         best: bool = False) -> None:
    for value in (understandability, geniality, applicability):
        if not 1 <= int(value) <= 5:
            raise CompareError("Scores go from 1 to 5.")
    store.rate_comparison_answer(answer_id, understandability, geniality, applicability, best)


@dataclass
class Summary:
    models: list[str]
    user_types: list[str]
    stats: dict[tuple[str, str, str], tuple[float, float, int]]  # (model, measure, user type) -> mean, sd, n
    best_counts: dict[str, int]
    rows: list[dict]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["session", "rater", "model", "user_type", "question", *MEASURES, "best"])
        for row in self.rows:
            writer.writerow([row["session"], row["rater"], row["model"], row["user_type"], row["question"],
                             *[row[m] for m in MEASURES], row["best"]])
        return out.getvalue()


def summarize(store, session_ids: list[int] | None = None) -> Summary:
    """Mean ± standard deviation per model, measure and user type over the rated answers."""
    rows = []
    for row in store.rated_comparison_answers(session_ids):
        names = [c["name"] for c in row["models"]]
        rows.append({"session": row["session_id"], "rater": row["rater"], "model": names[row["model_index"]],
                     "user_type": row["user_type"], "question": row["question"], "best": row["best"],
                     **{m: row[m] for m in MEASURES}})
    models = list(dict.fromkeys(r["model"] for r in rows))
    user_types = list(dict.fromkeys(r["user_type"] for r in rows))
    stats = {}
    for model in models:
        for measure in MEASURES:
            for user_type in user_types:
                values = [r[measure] for r in rows if r["model"] == model and r["user_type"] == user_type]
                if values:
                    sd = statistics.stdev(values) if len(values) > 1 else 0.0
                    stats[(model, measure, user_type)] = (statistics.fmean(values), sd, len(values))
    best = {model: sum(r["best"] for r in rows if r["model"] == model) for model in models}
    return Summary(models, user_types, stats, best, rows)


def export_csv(summary: Summary, path: str | Path) -> None:
    atomic_write_text(path, summary.csv())
