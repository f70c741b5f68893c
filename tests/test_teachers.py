"""The document builder and self-instruct really ask the model and keep what it wrote; a kill never duplicates a row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from muse_desktop.data.augment import self_instruct
from muse_desktop.chat.engine import ChatEngine, EngineSettings
from muse_desktop.models.demo_model import Variant
from muse_desktop.data.docbuilder import TEACHER_PROMPT, build_dataset, chunks, engine_teacher
from test_docbuilder import Teacher, documents  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    chat = ChatEngine(str(tiny_gguf[Variant.MINI_4K]), EngineSettings(threads=2, context_length=1024))
    yield chat
    chat.close()


class Writes:
    """Makes the model write ``text`` (then <|end|>) through llama.cpp's own sampling; records each prompt it saw."""

    def __init__(self, engine, text: str):
        self.ids = engine.tokenizer.encode_text(text) + [engine.tokenizer.special_id("<|end|>")]
        self.calls = 0
        self.step = 0
        self.last_len = -2

    def __call__(self, input_ids, scores):
        if len(input_ids) != self.last_len + 1:  # not the next step of the same answer: a new generation
            self.calls += 1
            self.step = 0
        self.last_len = len(input_ids)
        forced = np.full_like(scores, -np.inf)
        forced[self.ids[min(self.step, len(self.ids) - 1)]] = 0.0
        self.step += 1
        return forced


def test_the_loaded_model_is_asked_for_every_chunk_and_its_text_is_kept(documents, tmp_path, engine):  # noqa: F811
    reply = "Question: Where does the Nile flow?\nAnswer: North, into the sea."
    writer = Writes(engine, reply)
    asked = []
    teacher = engine_teacher(engine, 64, logits_processor=writer)

    def recording(prompt: str) -> str:
        asked.append(prompt)
        return teacher(prompt)

    events = list(build_dataset(documents, ["Child"], tmp_path / "t.jsonl", recording, max_chars=60))
    parts = chunks(documents, 60)
    assert asked == [TEACHER_PROMPT.format(user_type="Child", text=c.text) for c in parts]
    assert writer.calls == len(parts)  # llama.cpp generated once per chunk
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [(r["question"], r["answer"]) for r in rows] == [("Where does the Nile flow?", "North, into the sea.")] * len(parts)
    assert events[-1].data == {"per_user_type": {"Child": len(parts)}, "skipped": 0}


def test_self_instruct_asks_the_model_and_keeps_its_pair(engine):
    seeds = [{"user_type": "Child", "question": "Why is the sky blue?", "answer": "Air scatters blue light."},
             {"user_type": "Child", "question": "What do bees make?", "answer": "Honey, from flowers."}]
    writer = Writes(engine, "Question: How do fish breathe under water?\nAnswer: With gills.")
    done = list(self_instruct(seeds, engine_teacher(engine, 64, logits_processor=writer), count=2))[-1]
    assert writer.calls == 2
    assert done.data["kept"] == [{"user_type": "Child", "question": "How do fish breathe under water?",
                                  "answer": "With gills."}]
    assert done.data["counts"]["near-duplicate"] == 1  # the second, same question


def test_a_kill_between_the_row_and_the_progress_file_writes_no_duplicate(documents, tmp_path):  # noqa: F811
    teacher = Teacher()
    try:
        out = tmp_path / "b.jsonl"
        from muse_desktop.data.docbuilder import server_teacher

        list(build_dataset(documents, ["Child"], out, server_teacher(teacher.url)))
        rows = out.read_text().splitlines()
        progress = out.with_name(out.name + ".progress.json")
        state = json.loads(progress.read_text())
        state["done"] = state["done"][:-1]  # as if killed after the row was written, before the progress
        progress.write_text(json.dumps(state))
        asked = len(teacher.prompts)
        list(build_dataset(documents, ["Child"], out, server_teacher(teacher.url)))
        assert out.read_text().splitlines() == rows and len(teacher.prompts) == asked
    finally:
        teacher.close()
