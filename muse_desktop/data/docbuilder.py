"""The MUsE pipeline, offline: from a folder of documents to (user type, question, answer) triples.

Documents (``.txt``, ``.md``, ``.html``) are cut into chunks at paragraph boundaries.
For every chunk and every chosen user type a *teacher* writes one question that
person might ask about the text and answers it so that they understand (the MUsE
instruction). The teacher is the loaded GGUF model (through the chat engine and the
prompt contract) or any OpenAI-compatible server the user names — local by default.
Triples are appended to the output JSONL the moment they exist; a run that was
cancelled or killed continues where it stopped (finished (chunk, user type) pairs are
listed in ``OUTPUT.progress.json``). Replies that do not have the asked-for shape are
counted and skipped.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CancelToken, Done, Event, Log, Progress
from muse_desktop.base.fileio import atomic_write_text

SUFFIXES = (".txt", ".md", ".html", ".htm")
DEFAULT_SERVER = "http://127.0.0.1:8080/v1"  # llama.cpp's server, LM Studio, Ollama (…/v1) all speak this
TEACHER_PROMPT = (
    "Read the text below. Write one question that {user_type} might ask about it, and answer it using proper "
    "words and sentences to make {user_type} understand, with contexts familiar to {user_type}.\n"
    "Reply in exactly this form:\nQuestion: <the question>\nAnswer: <the answer>\n\nText:\n{text}"
)
PAIR = re.compile(r"Question:\s*(?P<q>.+?)\s*\n\s*Answer:\s*(?P<a>.+)", re.S | re.I)


class BuilderError(MuseError, RuntimeError):
    """A dataset that cannot be built from the documents; the message says why."""

    exit_code = 2  # the command line: what was given cannot be used


class _TextOnly(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def document_text(path: Path) -> str:
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextOnly()
        parser.feed(raw)
        raw = "".join(parser.parts)
    return raw


@dataclass(frozen=True)
class Chunk:
    id: str  # stable across runs: file name and a hash of the text
    source: str
    text: str


def chunks(folder: str | Path, max_chars: int = 1500) -> list[Chunk]:
    """Paragraph-aligned chunks of every document in ``folder`` (sorted, so runs agree)."""
    out = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", document_text(path)) if p.strip()]
        current: list[str] = []
        for paragraph in paragraphs + [None]:
            if paragraph is None or (current and sum(map(len, current)) + len(paragraph) > max_chars):
                if current:
                    text = "\n\n".join(current)
                    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
                    out.append(Chunk(f"{path.name}:{digest}", path.name, text))
                current = []
            if paragraph is not None:
                current.append(paragraph[: max_chars * 2])
    return out


def parse_pair(reply: str) -> tuple[str, str] | None:
    match = PAIR.search(reply or "")
    if not match:
        return None
    question, answer = match["q"].strip(), match["a"].strip()
    return (question, answer) if question and answer else None


def server_teacher(base_url: str = DEFAULT_SERVER, model: str = "local", timeout: float = 120,
                   api_key: str | None = None) -> Callable[[str], str]:
    """A teacher that asks an OpenAI-compatible chat-completions server."""
    url = base_url.rstrip("/") + "/chat/completions"
    key = api_key or os.environ.get("MUSE_TEACHER_API_KEY", "")

    def ask(prompt: str) -> str:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0.7}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=timeout) as response:
                data = json.loads(response.read().decode("utf-8"))
            return data["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as exc:
            raise BuilderError(f"The teacher server answered HTTP {exc.code} at {url}.") from None
        except (urllib.error.URLError, OSError) as exc:
            raise BuilderError(f"Could not reach the teacher server at {url} ({getattr(exc, 'reason', exc)}).") from None
        except (ValueError, KeyError, IndexError):
            raise BuilderError(f"The teacher server at {url} sent a reply that is not a chat completion.") from None

    return ask


def engine_teacher(engine, max_new_tokens: int = 300, logits_processor=None) -> Callable[[str], str]:
    """A teacher that is the loaded GGUF model (no instruction added: the prompt says it all).

    ``logits_processor`` is passed to the engine, e.g. to hold replies to a format.
    """
    from muse_desktop.chat.engine import Sampling
    from muse_desktop.base.prompting import Turn

    def ask(prompt: str) -> str:
        done = [e for e in engine.generate(None, [Turn("user", prompt)], None,
                                           Sampling(temperature=0.7, max_new_tokens=max_new_tokens, seed=0),
                                           logits_processor=logits_processor)
                if isinstance(e, Done)]
        return done[-1].data["text"]

    return ask


def _written_keys(output: Path) -> set[str]:
    try:
        lines = output.read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()
    keys = set()
    for line in lines:
        try:
            keys.add(json.loads(line)["chunk"])
        except (ValueError, KeyError, TypeError):
            continue  # a row cut short by a kill, or one written by an older version
    return keys


def build_dataset(folder: str | Path, user_types: list[str], output: str | Path, teacher: Callable[[str], str],
                  max_chars: int = 1500, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Write MUsE triples for every chunk × user type to ``output`` (JSONL), resuming where it stopped."""
    output = Path(output)
    progress_file = output.with_name(output.name + ".progress.json")
    parts = chunks(folder, max_chars)
    if not parts:
        raise BuilderError(f"No .txt, .md or .html documents with text in {folder}.")
    user_types = [u.strip() for u in user_types if u.strip()]
    if not user_types:
        raise BuilderError("Choose at least one user type.")
    try:
        state = json.loads(progress_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {"done": [], "skipped": 0}
    done = set(state["done"])
    # A kill between writing a row and the progress file leaves the row: it counts as done.
    written = _written_keys(output)
    if written - done:
        state["done"] += sorted(written - done)
        done |= written
    todo = [(c, u) for c in parts for u in user_types if f"{c.id}|{u}" not in done]
    total = len(parts) * len(user_types)
    if done:
        yield Log(f"Continuing: {len(done)} of {total} already done.")
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as out:
        if out.tell() and not output.read_bytes().endswith(b"\n"):
            out.write("\n")  # a row cut short by a kill stays on its own (skipped) line
        for chunk, user_type in todo:
            if cancel is not None:
                cancel.check()
            pair = parse_pair(teacher(TEACHER_PROMPT.format(user_type=user_type, text=chunk.text)))
            if pair is None:
                state["skipped"] += 1
            else:
                out.write(json.dumps({"user_type": user_type, "question": pair[0], "answer": pair[1],
                                      "source": chunk.source, "chunk": f"{chunk.id}|{user_type}"},
                                     ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
            state["done"].append(f"{chunk.id}|{user_type}")
            atomic_write_text(progress_file, json.dumps(state))
            yield Progress(len(state["done"]), total, "pairs", f"{chunk.source} for {user_type}")
    counts: dict[str, int] = {}
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            user_type = json.loads(line)["user_type"]
        except (ValueError, KeyError):
            continue
        counts[user_type] = counts.get(user_type, 0) + 1
    summary = ", ".join(f"{u}: {n}" for u, n in sorted(counts.items())) or "none"
    yield Done(f"{sum(counts.values())} question/answer pairs ({summary}); {state['skipped']} replies skipped "
               "because they did not have the asked-for form.", str(output),
               {"per_user_type": counts, "skipped": state["skipped"]})
