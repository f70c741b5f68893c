"""Self-instruct: ROUGE-L against an independent computation, and every filter counted."""

from __future__ import annotations

import itertools

import pytest

from muse_desktop.data.augment import rouge_l, self_instruct
from muse_desktop.base.events import Done

SEEDS = [
    {"user_type": "Child", "question": "Why is the sky blue?", "answer": "Air bounces blue light around most."},
    {"user_type": "Child", "question": "Why do cats purr?", "answer": "They purr when they feel safe."},
    {"user_type": "Child", "question": "What do bees make?", "answer": "Bees make honey from flowers."},
]


def lcs_by_brute_force(a: list[str], b: list[str]) -> int:
    best = 0
    for size in range(1, len(a) + 1):
        for picks in itertools.combinations(range(len(a)), size):
            sub = [a[i] for i in picks]
            it = iter(b)
            if all(token in it for token in sub):
                best = max(best, size)
    return best


@pytest.mark.parametrize("a, b", [("the cat sat on the mat", "the cat lay on a mat"),
                                  ("why is the sky blue", "why is the sea blue today"), ("a b c", "x y z")])
def test_rouge_l_matches_its_definition(a, b):
    lcs = lcs_by_brute_force(a.split(), b.split())
    p, r = lcs / len(a.split()), lcs / len(b.split())
    expected = 0.0 if lcs == 0 else 2 * p * r / (p + r)
    assert rouge_l(a, b) == pytest.approx(expected)
    assert rouge_l("Why is the SKY blue?", "why is the sky blue") == 1.0


def test_every_kind_of_bad_candidate_is_filtered_and_counted():
    replies = iter([
        "Question: Why does it rain?\nAnswer: Clouds get heavy with water.",  # kept
        "Question: Why is the sky so blue?\nAnswer: Light.",  # near-duplicate of a seed
        "I like turtles.",  # malformed
        "   ",  # empty
        "Question: Tell me everything?\nAnswer: " + "word " * 400,  # too long
        "Question: Why does it rain?\nAnswer: Again.",  # near-duplicate of a kept one
        "Question: How do plants drink?\nAnswer: Through their roots.",  # kept
    ])
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return next(replies)

    done = list(self_instruct(SEEDS, ask, count=7))[-1]
    assert isinstance(done, Done)
    assert done.data["counts"] == {"kept": 2, "malformed": 1, "empty": 1, "too long": 1, "near-duplicate": 2}
    assert [k["question"] for k in done.data["kept"]] == ["Why does it rain?", "How do plants drink?"]
    assert all("Question: " in p and "Child" in p for p in prompts)
    with pytest.raises(ValueError):
        list(self_instruct(SEEDS[:1], ask, 1))


def test_self_instruct_runs_on_the_local_model(tiny_gguf):
    from muse_desktop.chat.engine import ChatEngine, EngineSettings
    from muse_desktop.models.demo_model import Variant
    from muse_desktop.data.docbuilder import engine_teacher

    engine = ChatEngine(str(tiny_gguf[Variant.MINI_4K]), EngineSettings(threads=2, context_length=512))
    try:
        done = list(self_instruct(SEEDS, engine_teacher(engine, 16), count=3))[-1]
    finally:
        engine.close()
    assert sum(done.data["counts"].values()) == 3
