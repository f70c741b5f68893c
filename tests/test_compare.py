"""Blind comparison: answers shuffled without names, scores stored, mean ± sd per model, measure and user type."""

from __future__ import annotations

import csv
import io
import statistics

import pytest

from muse_desktop.evaluation.compare import (
    MEASURES,
    CompareError,
    Contender,
    generate_answers,
    new_session,
    rate,
    rounds,
    summarize,
)
from muse_desktop.chat.store import Store


def test_a_session_from_answers_to_summary(tiny_gguf, isolated_home):
    from muse_desktop.chat.engine import EngineSettings
    from muse_desktop.models.demo_model import Variant

    store = Store()
    contenders = [Contender("Base", str(tiny_gguf[Variant.MINI_4K])), Contender("GQA", str(tiny_gguf[Variant.GQA]))]
    with pytest.raises(CompareError, match="2 to 5"):
        new_session(store, "Ana", contenders[:1])
    session = new_session(store, "Ana", contenders, seed=7)
    events = list(generate_answers(store.path, session, ["Why is the sky blue?", "What do bees make?"],
                                   ["Child", "Elderly"], EngineSettings(threads=2, context_length=256),
                                   max_new_tokens=8))
    assert events[-1].data["rounds"] == 4
    shown = rounds(store, session)
    assert len(shown) == 4 and all(len(r) == 2 for r in shown)
    assert all("model_index" not in answer and "name" not in answer for r in shown for answer in r)  # blind
    orders = [[row[0] for row in store.db.execute(
        "SELECT model_index FROM comparison_answers WHERE session_id = ? AND round = ? ORDER BY position",
        (session, n))] for n in range(4)]
    assert len({tuple(o) for o in orders}) == 2  # the order changes between rounds (seeded)

    # Score model 0 high and model 1 low, with known spreads; pick model 0 as best each round.
    expected: dict[tuple[str, str], list[int]] = {}
    for n, answers in enumerate(shown):
        for answer in answers:
            index = store.db.execute("SELECT model_index FROM comparison_answers WHERE id = ?",
                                     (answer["id"],)).fetchone()[0]
            scores = (5, 4, 4 + n % 2) if index == 0 else (2, 1 + n % 2, 3)
            rate(store, answer["id"], *scores, best=index == 0)
            name = contenders[index].name
            for measure, score in zip(MEASURES, scores, strict=True):
                expected.setdefault((name, measure, answer["user_type"]), []).append(score)
    with pytest.raises(CompareError):
        rate(store, shown[0][0]["id"], 6, 1, 1)
    summary = summarize(store, [session])
    assert summary.models == ["Base", "GQA"] or summary.models == ["GQA", "Base"]
    for key, values in expected.items():
        mean, sd, n = summary.stats[key]
        assert (mean, n) == (statistics.fmean(values), len(values))
        assert sd == pytest.approx(statistics.stdev(values))
    assert summary.best_counts == {"Base": 4, "GQA": 0}
    table = list(csv.DictReader(io.StringIO(summary.csv())))
    assert len(table) == 8 and table[0]["rater"] == "Ana" and set(MEASURES) <= set(table[0])
    store.close()
