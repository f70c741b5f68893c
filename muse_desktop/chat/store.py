"""What must persist: profiles, conversations and messages, in SQLite.

WAL journal, foreign keys on, ``synchronous=FULL`` so that a message is on disk
the moment it is committed (a kill or power cut right after loses nothing), and a
schema version (``PRAGMA user_version``) with forward-only migrations. A file
that is not a database is moved aside, never overwritten; a database written by a
newer version is refused untouched.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from muse_desktop.base.errors import MuseError
from muse_desktop.base.paths import user_dirs
from muse_desktop.base.prompting import Turn

DB_FILE = "muse.sqlite3"

# Each entry upgrades the schema from version i to i + 1. Never edit a released one.
MIGRATIONS = [
    """
    CREATE TABLE profiles (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        user_type_id TEXT NOT NULL DEFAULT '',
        custom_user_type TEXT NOT NULL DEFAULT '',
        model_path TEXT NOT NULL DEFAULT '',
        adapter_path TEXT NOT NULL DEFAULT '',
        adapter_scale REAL NOT NULL DEFAULT 1.0,
        settings_json TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER REFERENCES profiles(id) ON DELETE CASCADE,
        title TEXT NOT NULL,
        user_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX conversations_by_profile ON conversations(profile_id, updated_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        created_at TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        settings_json TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    """,
    # 2: the model library (models and GGUF LoRA adapters made by the trainer or downloaded).
    """
    CREATE TABLE library (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('model', 'adapter')),
        path TEXT NOT NULL UNIQUE,
        base_path TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT '',
        info_json TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    """,
    # 3: preferences between candidate answers (preference mode).
    """
    CREATE TABLE preferences (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER REFERENCES profiles(id) ON DELETE SET NULL,
        conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
        user_type TEXT NOT NULL,
        context_json TEXT NOT NULL,
        prompt TEXT NOT NULL,
        candidates_json TEXT NOT NULL,
        best INTEGER NOT NULL,
        worst INTEGER NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    """,
    # 4: blind comparisons (the Compare tab): raters, sessions and one row per rated answer.
    """
    CREATE TABLE raters (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE comparison_sessions (
        id INTEGER PRIMARY KEY,
        rater_id INTEGER NOT NULL REFERENCES raters(id) ON DELETE CASCADE,
        models_json TEXT NOT NULL,
        seed INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE comparison_answers (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES comparison_sessions(id) ON DELETE CASCADE,
        round INTEGER NOT NULL,
        position INTEGER NOT NULL,
        model_index INTEGER NOT NULL,
        user_type TEXT NOT NULL,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        understandability INTEGER CHECK (understandability BETWEEN 1 AND 5),
        geniality INTEGER CHECK (geniality BETWEEN 1 AND 5),
        applicability INTEGER CHECK (applicability BETWEEN 1 AND 5),
        best INTEGER NOT NULL DEFAULT 0,
        rated_at TEXT
    );
    CREATE INDEX comparison_answers_by_session ON comparison_answers(session_id, round, position);
    """,
    """
    CREATE TABLE app_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 6: a person's own blind check of their new add-on (muse_desktop.evaluation.own_check): a
    # comparison session that belongs to the person (removed with them), what the check is about
    # and its decision (info_json), and one optional 1–5 rating per answer.
    """
    ALTER TABLE comparison_sessions ADD COLUMN profile_id INTEGER REFERENCES profiles(id) ON DELETE CASCADE;
    ALTER TABLE comparison_sessions ADD COLUMN info_json TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE comparison_answers ADD COLUMN rating INTEGER CHECK (rating BETWEEN 1 AND 5);
    CREATE INDEX comparison_sessions_by_profile ON comparison_sessions(profile_id)
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def read_app_state(key: str, path: str | Path | None = None) -> str | None:
    """A value of the app_state table, read without changing anything; None when absent or unreadable.

    Used before any Store is open (the caregiver lock's second witness, see
    muse_desktop.household.lock), so it opens the file read-only and never creates it.
    """
    path = Path(path) if path else user_dirs().data / DB_FILE
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute("SELECT value FROM app_state WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def write_app_state(key: str, value: str, path: str | Path | None = None) -> None:
    """Set a value of the app_state table (creating or upgrading the database as the Store does)."""
    store = Store(path)
    try:
        store.db.execute("INSERT INTO app_state (key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
    finally:
        store.close()


class StoreError(MuseError, RuntimeError):
    """The database cannot be used; the message says why, for the user."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Profile:
    id: int
    name: str
    user_type_id: str = ""
    custom_user_type: str = ""
    model_path: str = ""
    adapter_path: str = ""
    adapter_scale: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""


@dataclass
class Conversation:
    id: int
    profile_id: int | None
    title: str
    user_type: str
    created_at: str
    updated_at: str


@dataclass
class LibraryEntry:
    """A GGUF the app knows about: a model, or an adapter with the base it applies to."""

    id: int
    name: str
    kind: str
    path: str
    base_path: str
    source: str
    info: dict[str, Any]
    created_at: str


@dataclass
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: str
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


class Store:
    """The app's database (one connection; use from one thread at a time)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else user_dirs().data / DB_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.moved_aside: Path | None = None
        try:
            self.db = self._connect()
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc) and "malformed" not in str(exc):
                raise StoreError(f"Could not open your conversations ({exc}).") from None
            self.moved_aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            self.path.replace(self.moved_aside)
            for suffix in ("-wal", "-shm"):
                leftover = self.path.with_name(self.path.name + suffix)
                if leftover.exists():
                    leftover.replace(self.moved_aside.with_name(self.moved_aside.name + suffix))
            self.db = self._connect()

    @property
    def problem(self) -> str | None:
        if self.moved_aside is None:
            return None
        return (f"The conversation database was damaged. It was kept as {self.moved_aside.name} "
                "and a new one was started.")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=FULL")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"Your conversations were saved by a newer MUsE Desktop (schema {version}, this one knows "
                f"{SCHEMA_VERSION}). Please update the app; nothing was changed."
            )
        for target in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, MIGRATIONS[target].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={target + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def integrity(self) -> str:
        """SQLite's own check of the database file: "ok" when it is sound."""
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- profiles ----------------------------------------------------------------------

    def create_profile(self, name: str, **fields: Any) -> Profile:
        settings = json.dumps(fields.pop("settings", {}))
        columns = ["name", "created_at", "settings_json", *fields]
        values = [name, now(), settings, *fields.values()]
        try:
            cursor = self.db.execute(
                f"INSERT INTO profiles ({', '.join(columns)}) VALUES ({', '.join('?' * len(values))})", values
            )
        except sqlite3.IntegrityError:
            raise StoreError(f"There is already a profile called '{name}'.") from None
        return self.profile(cursor.lastrowid)

    def profile(self, profile_id: int) -> Profile:
        row = self.db.execute("SELECT * FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        if row is None:
            raise StoreError(f"No profile {profile_id}.")
        data = dict(row)
        data["settings"] = json.loads(data.pop("settings_json"))
        return Profile(**data)

    def profiles(self) -> list[Profile]:
        return [self.profile(row[0]) for row in self.db.execute("SELECT id FROM profiles ORDER BY name")]

    def update_profile(self, profile_id: int, **fields: Any) -> Profile:
        if "settings" in fields:
            fields["settings_json"] = json.dumps(fields.pop("settings"))
        if fields:
            assignments = ", ".join(f"{column} = ?" for column in fields)
            self.db.execute(f"UPDATE profiles SET {assignments} WHERE id = ?", [*fields.values(), profile_id])
        return self.profile(profile_id)

    def delete_profile(self, profile_id: int, library_ids: Iterable[int] = ()) -> None:
        """Remove a person with what is theirs: conversations (and messages), preference records, and
        the model library entries ``library_ids`` (their add-ons), all in one transaction."""
        with self.transaction() as db:
            db.executemany("DELETE FROM library WHERE id = ?", [(entry_id,) for entry_id in library_ids])
            db.execute("DELETE FROM preferences WHERE profile_id = ?", (profile_id,))
            db.execute("DELETE FROM profiles WHERE id = ?", (profile_id,))  # conversations cascade

    def adopt_unowned(self, profile_id: int) -> int:
        """Give conversations and preference records that belong to nobody to one person; how many rows moved."""
        with self.transaction() as db:
            moved = db.execute("UPDATE conversations SET profile_id = ? WHERE profile_id IS NULL",
                               (profile_id,)).rowcount
            moved += db.execute("UPDATE preferences SET profile_id = ? WHERE profile_id IS NULL",
                                (profile_id,)).rowcount
        return moved

    # -- model library -----------------------------------------------------------------

    def add_to_library(self, name: str, kind: str, path: str, base_path: str = "", source: str = "",
                       info: dict[str, Any] | None = None) -> LibraryEntry:
        """Register (or update, by path) a model or adapter file."""
        self.db.execute(
            "INSERT INTO library (name, kind, path, base_path, source, info_json, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET name = excluded.name, "
            "kind = excluded.kind, base_path = excluded.base_path, source = excluded.source, "
            "info_json = excluded.info_json",
            (name, kind, str(path), str(base_path), source, json.dumps(info or {}), now()),
        )
        row = self.db.execute("SELECT * FROM library WHERE path = ?", (str(path),)).fetchone()
        return self._entry(row)

    @staticmethod
    def _entry(row) -> LibraryEntry:
        data = dict(row)
        data["info"] = json.loads(data.pop("info_json"))
        return LibraryEntry(**data)

    def library(self) -> list[LibraryEntry]:
        return [self._entry(row) for row in self.db.execute("SELECT * FROM library ORDER BY created_at DESC, id DESC")]

    def remove_from_library(self, entry_id: int) -> None:
        self.db.execute("DELETE FROM library WHERE id = ?", (entry_id,))

    # -- preferences -------------------------------------------------------------------

    def add_preference(self, user_type: str, context: list[dict], prompt: str, candidates: list[dict],
                       best: int, worst: int, reason: str = "", conversation_id: int | None = None,
                       profile_id: int | None = None) -> int:
        """Record which candidate answer a person found best and worst (and why)."""
        if not (0 <= best < len(candidates) and 0 <= worst < len(candidates)) or best == worst:
            raise StoreError("Best and worst must be two different candidates.")
        cursor = self.db.execute(
            "INSERT INTO preferences (profile_id, conversation_id, user_type, context_json, prompt, "
            "candidates_json, best, worst, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (profile_id, conversation_id, user_type, json.dumps(context), prompt, json.dumps(candidates), best,
             worst, reason, now()),
        )
        return cursor.lastrowid

    def preferences(self, profile_id: int | None = None) -> list[dict[str, Any]]:
        """Every preference record, or one person's (``profile_id``)."""
        if profile_id is None:
            rows = self.db.execute("SELECT * FROM preferences ORDER BY id").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM preferences WHERE profile_id = ? ORDER BY id",
                                   (profile_id,)).fetchall()
        out = []
        for row in rows:
            data = dict(row)
            data["context"] = json.loads(data.pop("context_json"))
            data["candidates"] = json.loads(data.pop("candidates_json"))
            out.append(data)
        return out

    # -- blind comparisons (the Compare tab; the method is in muse_desktop.evaluation.compare) --------

    def add_comparison_session(self, rater: str, models: list[dict[str, Any]], seed: int) -> int:
        """A new session for ``rater`` (added on first use) comparing ``models``; its id."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO raters (name, created_at) VALUES (?, datetime('now'))", (rater,))
            rater_id = db.execute("SELECT id FROM raters WHERE name = ?", (rater,)).fetchone()[0]
            cursor = db.execute(
                "INSERT INTO comparison_sessions (rater_id, models_json, seed, created_at) "
                "VALUES (?, ?, ?, datetime('now'))", (rater_id, json.dumps(models), seed))
        return cursor.lastrowid

    def comparison_session(self, session_id: int) -> tuple[list[dict[str, Any]], int]:
        """A session's models (as stored) and its shuffling seed."""
        row = self.db.execute("SELECT models_json, seed FROM comparison_sessions WHERE id = ?",
                              (session_id,)).fetchone()
        if row is None:
            raise StoreError(f"There is no comparison number {session_id}.")
        return json.loads(row["models_json"]), row["seed"]

    def add_comparison_answers(self, session_id: int, answers: list[tuple[int, int, int, str, str, str]]) -> None:
        """All of a session's answers at once: (round, position, model index, user type, question, answer)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO comparison_answers (session_id, round, position, model_index, user_type, "
                "question, answer) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(session_id, *answer) for answer in answers])

    def comparison_answers(self, session_id: int) -> list[dict[str, Any]]:
        """A session's answers in the order the rater sees them, without the model behind each."""
        rows = self.db.execute(
            "SELECT id, round, position, user_type, question, answer, understandability, geniality, "
            "applicability, best FROM comparison_answers WHERE session_id = ? ORDER BY round, position",
            (session_id,)).fetchall()
        return [dict(row) for row in rows]

    def rate_comparison_answer(self, answer_id: int, understandability: int, geniality: int, applicability: int,
                               best: bool) -> None:
        """Store one answer's scores; ``best`` takes the mark from the other answers of its round."""
        with self.transaction() as db:
            if best:  # one best per round
                db.execute("UPDATE comparison_answers SET best = 0 WHERE (session_id, round) = "
                           "(SELECT session_id, round FROM comparison_answers WHERE id = ?)", (answer_id,))
            db.execute("UPDATE comparison_answers SET understandability = ?, geniality = ?, applicability = ?, "
                       "best = ?, rated_at = datetime('now') WHERE id = ?",
                       (understandability, geniality, applicability, int(best), answer_id))

    def rated_comparison_answers(self, session_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """Every rated answer (of the given sessions, or of all), with its session's models and rater."""
        query = ("SELECT a.*, s.models_json, r.name AS rater FROM comparison_answers a "
                 "JOIN comparison_sessions s ON s.id = a.session_id JOIN raters r ON r.id = s.rater_id "
                 "WHERE a.understandability IS NOT NULL")
        params: list[int] = []
        if session_ids:
            query += f" AND a.session_id IN ({', '.join('?' * len(session_ids))})"
            params = list(session_ids)
        rows = self.db.execute(query + " ORDER BY a.session_id, a.round, a.position", params).fetchall()
        out = []
        for row in rows:
            data = dict(row)
            data["models"] = json.loads(data.pop("models_json"))
            out.append(data)
        return out

    # -- a person's own blind check (the method is in muse_desktop.evaluation.own_check) --------

    def add_own_check(self, profile_id: int, rater: str, models: list[dict[str, Any]], seed: int,
                      info: dict[str, Any]) -> int:
        """A comparison session that belongs to person ``profile_id`` (removed with them); its id."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO raters (name, created_at) VALUES (?, datetime('now'))", (rater,))
            rater_id = db.execute("SELECT id FROM raters WHERE name = ?", (rater,)).fetchone()[0]
            cursor = db.execute(
                "INSERT INTO comparison_sessions (rater_id, models_json, seed, created_at, profile_id, info_json) "
                "VALUES (?, ?, ?, datetime('now'), ?, ?)",
                (rater_id, json.dumps(models), seed, profile_id, json.dumps(info)))
        return cursor.lastrowid

    def own_check(self, session_id: int) -> dict[str, Any]:
        """One person's check: id, profile_id, models, seed, info and created_at."""
        row = self.db.execute("SELECT id, profile_id, models_json, seed, info_json, created_at "
                              "FROM comparison_sessions WHERE id = ? AND profile_id IS NOT NULL",
                              (session_id,)).fetchone()
        if row is None:
            raise StoreError(f"There is no check number {session_id}.")
        data = dict(row)
        data["models"] = json.loads(data.pop("models_json"))
        data["info"] = json.loads(data.pop("info_json"))
        return data

    def own_checks(self, profile_id: int) -> list[dict[str, Any]]:
        """A person's checks, newest first (as :meth:`own_check` gives each)."""
        rows = self.db.execute("SELECT id FROM comparison_sessions WHERE profile_id = ? ORDER BY id DESC",
                               (profile_id,)).fetchall()
        return [self.own_check(row[0]) for row in rows]

    def set_own_check_info(self, session_id: int, info: dict[str, Any]) -> None:
        self.db.execute("UPDATE comparison_sessions SET info_json = ? WHERE id = ? AND profile_id IS NOT NULL",
                        (json.dumps(info), session_id))

    def own_check_answers(self, session_id: int) -> list[dict[str, Any]]:
        """A check's answers in the order the person sees them, without the model behind each."""
        rows = self.db.execute(
            "SELECT id, round, position, user_type, question, answer, best, rating FROM comparison_answers "
            "WHERE session_id = ? ORDER BY round, position", (session_id,)).fetchall()
        return [dict(row) for row in rows]

    def own_check_results(self, session_id: int) -> list[dict[str, Any]]:
        """Every answer of a check with the model behind it (for the counts, never for the screen)."""
        rows = self.db.execute(
            "SELECT id, round, position, model_index, best, rating FROM comparison_answers "
            "WHERE session_id = ? ORDER BY round, position", (session_id,)).fetchall()
        return [dict(row) for row in rows]

    def pick_comparison_answer(self, answer_id: int) -> None:
        """Mark one answer as the best of its round (and no other answer of that round)."""
        with self.transaction() as db:
            db.execute("UPDATE comparison_answers SET best = 0 WHERE (session_id, round) = "
                       "(SELECT session_id, round FROM comparison_answers WHERE id = ?)", (answer_id,))
            db.execute("UPDATE comparison_answers SET best = 1, rated_at = datetime('now') WHERE id = ?",
                       (answer_id,))

    def set_answer_rating(self, answer_id: int, rating: int | None) -> None:
        """One answer's 1–5 rating (None takes it away)."""
        self.db.execute("UPDATE comparison_answers SET rating = ? WHERE id = ?", (rating, answer_id))

    # -- conversations -----------------------------------------------------------------

    def create_conversation(self, user_type: str, title: str = "New conversation",
                            profile_id: int | None = None) -> Conversation:
        stamp = now()
        cursor = self.db.execute(
            "INSERT INTO conversations (profile_id, title, user_type, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (profile_id, title, user_type, stamp, stamp),
        )
        return self.conversation(cursor.lastrowid)

    def conversation(self, conversation_id: int) -> Conversation:
        row = self.db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise StoreError(f"No conversation {conversation_id}.")
        return Conversation(**dict(row))

    def conversations(self, profile_id: int | None = None) -> list[Conversation]:
        if profile_id is None:
            rows = self.db.execute("SELECT * FROM conversations ORDER BY updated_at DESC, id DESC")
        else:
            rows = self.db.execute(
                "SELECT * FROM conversations WHERE profile_id = ? ORDER BY updated_at DESC, id DESC", (profile_id,)
            )
        return [Conversation(**dict(row)) for row in rows]

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            raise StoreError("A conversation needs a name.")
        self.db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def preference_count(self, conversation_id: int) -> int:
        return self.db.execute("SELECT COUNT(*) FROM preferences WHERE conversation_id = ?",
                               (conversation_id,)).fetchone()[0]

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation with its messages and the preferences recorded in it (their texts are its texts)."""
        with self.transaction() as db:
            db.execute("DELETE FROM preferences WHERE conversation_id = ?", (conversation_id,))
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages ----------------------------------------------------------------------

    def add_message(self, conversation_id: int, role: str, content: str, model: str = "",
                    settings: dict[str, Any] | None = None) -> Message:
        """Store a finished message; it is committed (and synced) before this returns."""
        stamp = now()
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, model, settings_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (conversation_id, role, content, stamp, model, json.dumps(settings or {})),
            )
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (stamp, conversation_id))
        return self.message(cursor.lastrowid)

    def delete_message(self, message_id: int) -> None:
        self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def set_message_settings(self, message_id: int, settings: dict[str, Any]) -> None:
        self.db.execute("UPDATE messages SET settings_json = ? WHERE id = ?", (json.dumps(settings), message_id))

    def mark_unanswered(self, message_id: int, reason: str) -> None:
        """A question that got no answer (failed, stopped before any text, empty): kept and shown, left out of prompts."""
        message = self.message(message_id)
        self.set_message_settings(message_id, dict(message.settings, unanswered=reason))

    def repair_conversation(self, conversation_id: int) -> int:
        """Mark every question left without an answer (e.g. by a crash); returns how many were marked."""
        messages = self.messages(conversation_id)
        marked = 0
        for index, message in enumerate(messages):
            following = messages[index + 1] if index + 1 < len(messages) else None
            if (message.role == "user" and not message.settings.get("unanswered")
                    and (following is None or following.role != "assistant")):
                self.mark_unanswered(message.id, "no answer was saved")
                marked += 1
        return marked

    def message(self, message_id: int) -> Message:
        row = self.db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        data = dict(row)
        data["settings"] = json.loads(data.pop("settings_json"))
        return Message(**data)

    def messages(self, conversation_id: int) -> list[Message]:
        rows = self.db.execute("SELECT id FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,))
        return [self.message(row[0]) for row in rows]

    def turns(self, conversation_id: int) -> list[Turn]:
        """The conversation as the prompt contract wants it: answered exchanges, then the question being asked.

        Questions without an answer (marked, or followed by another question) are left
        out, so one failed answer never leaves two user turns in a row.
        """
        messages = self.messages(conversation_id)
        turns: list[Turn] = []
        for index, message in enumerate(messages):
            if message.role == "user":
                if message.settings.get("unanswered"):
                    continue
                following = messages[index + 1] if index + 1 < len(messages) else None
                if following is None or following.role == "assistant":
                    turns.append(Turn("user", message.content))
            elif turns and turns[-1].role == "user":
                turns.append(Turn("assistant", message.content))
        return turns

    # -- export ------------------------------------------------------------------------

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        conversation = self.conversation(conversation_id)
        return {
            "title": conversation.title,
            "user_type": conversation.user_type,
            "created_at": conversation.created_at,
            "messages": [
                {"role": m.role, "content": m.content, "created_at": m.created_at, "model": m.model,
                 "settings": m.settings}
                for m in self.messages(conversation_id)
            ],
        }

    def export_markdown(self, conversation_id: int) -> str:
        conversation = self.conversation(conversation_id)
        lines = [f"# {conversation.title}", "", f"*Answers worded for: {conversation.user_type}*", ""]
        for m in self.messages(conversation_id):
            who = "You" if m.role == "user" else "MUsE"
            lines += [f"**{who}** ({m.created_at[:16].replace('T', ' ')} UTC)", "", m.content, ""]
        return "\n".join(lines)
