"""The SQLite store: what persists, how it survives kills and damage, and exports."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys

import pytest

from helpers import REPO
from muse_desktop.base.prompting import Turn
from muse_desktop.chat.store import DB_FILE, SCHEMA_VERSION, Store, StoreError


@pytest.fixture
def store(isolated_home):
    opened = Store()
    yield opened
    opened.close()


def test_database_lives_in_the_data_folder_with_wal_and_foreign_keys(store, isolated_home):
    assert store.path == isolated_home / "data" / DB_FILE
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_profiles_conversations_and_messages_round_trip(store):
    profile = store.create_profile("Grandma", user_type_id="older-adult", model_path="/m.gguf",
                                   settings={"max_new_tokens": 300})
    with pytest.raises(StoreError, match="already a profile called 'Grandma'"):
        store.create_profile("Grandma")
    assert store.update_profile(profile.id, adapter_path="/a.gguf", adapter_scale=0.5).adapter_scale == 0.5
    chat = store.create_conversation("Elderly", "Food", profile.id)
    store.add_message(chat.id, "user", "Why is a balanced diet important?")
    answer = store.add_message(chat.id, "assistant", "It keeps you strong. ☕", model="muse-q4.gguf",
                               settings={"temperature": 0.6, "seed": 3})
    assert answer.settings == {"temperature": 0.6, "seed": 3} and answer.created_at.endswith("+00:00")
    assert store.turns(chat.id) == [Turn("user", "Why is a balanced diet important?"),
                                    Turn("assistant", "It keeps you strong. ☕")]
    store.rename_conversation(chat.id, "  Healthy   food ")
    assert store.conversation(chat.id).title == "Healthy food"
    with pytest.raises(StoreError, match="needs a name"):
        store.rename_conversation(chat.id, "   ")
    assert [c.id for c in store.conversations(profile.id)] == [chat.id]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_message(chat.id, "system", "not a role")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_message(9999, "user", "no such conversation")
    store.delete_profile(profile.id)  # cascades
    assert store.conversations() == [] and store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_exports(store):
    chat = store.create_conversation("Child", "Bees")
    store.add_message(chat.id, "user", "Why do bees buzz?")
    store.add_message(chat.id, "assistant", "Their wings flap very fast!")
    markdown = store.export_markdown(chat.id)
    assert markdown.startswith("# Bees\n") and "*Answers worded for: Child*" in markdown
    assert "**You**" in markdown and "Their wings flap very fast!" in markdown
    data = store.export_json(chat.id)
    assert json.loads(json.dumps(data))["messages"][1]["content"] == "Their wings flap very fast!"
    store.delete_conversation(chat.id)
    with pytest.raises(StoreError):
        store.conversation(chat.id)


KILL = """
import os, sys, time
from muse_desktop.chat.store import Store
store = Store()
chat = store.create_conversation("Elderly", "kept")
store.add_message(chat.id, "user", "a question")
store.add_message(chat.id, "assistant", "an answer")
print(chat.id, flush=True)
time.sleep(60)
"""


def test_a_killed_app_loses_no_committed_message(isolated_home):
    process = subprocess.Popen([sys.executable, "-c", KILL], stdout=subprocess.PIPE, text=True, cwd=REPO)
    conversation_id = int(process.stdout.readline())
    process.send_signal(signal.SIGKILL)
    process.wait()
    reopened = Store()
    assert [m.content for m in reopened.messages(conversation_id)] == ["a question", "an answer"]
    reopened.close()


def test_a_damaged_database_is_kept_aside(isolated_home):
    path = isolated_home / "data" / DB_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite at all" * 100)
    store = Store()
    assert store.moved_aside is not None and store.moved_aside.read_bytes().startswith(b"this is not sqlite")
    assert "kept as" in store.problem
    assert store.conversations() == []
    store.close()


def test_a_newer_schema_is_refused_untouched(isolated_home):
    store = Store()
    store.db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(StoreError, match="newer MUsE Desktop"):
        Store()
    db = sqlite3.connect(isolated_home / "data" / DB_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


def test_migrations_run_from_an_empty_database(tmp_path):
    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"profiles", "conversations", "messages"} <= tables
    store.close()


STREAM_AND_DIE = """
import sys, time
import numpy as np
from muse_desktop.chat.engine import ChatEngine, EngineSettings, Sampling
from muse_desktop.base.events import Text
from muse_desktop.chat.store import Store

store = Store()
chat = store.create_conversation("Elderly", "before the kill")
store.add_message(chat.id, "user", "first question")
store.add_message(chat.id, "assistant", "first answer")
store.add_message(chat.id, "user", "second question")
engine = ChatEngine(sys.argv[1], EngineSettings(context_length=4096, threads=1))
stops = sorted(engine.stop_ids)

def slow_and_endless(_ids, scores):
    time.sleep(0.01)
    scores[stops] = -np.inf
    return scores

for event in engine.generate("Elderly", store.turns(chat.id), sampling=Sampling(max_new_tokens=100000),
                             logits_processor=slow_and_endless):
    if isinstance(event, Text):
        print("STREAMING", chat.id, flush=True)
"""


def test_killing_the_app_while_an_answer_streams_keeps_earlier_messages(tiny_gguf, isolated_home):
    from muse_desktop.models.demo_model import Variant

    process = subprocess.Popen([sys.executable, "-c", STREAM_AND_DIE, str(tiny_gguf[Variant.MINI_4K])],
                               stdout=subprocess.PIPE, text=True, cwd=REPO)
    line = process.stdout.readline().split()
    assert line[0] == "STREAMING"
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = Store()
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [m.content for m in store.messages(int(line[1]))] == ["first question", "first answer", "second question"]
    store.close()
