"""The offline dataset builder: documents → chunks → a teacher's question/answer pairs per user type, resumable."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PySide6.QtCore import Qt

from muse_desktop.data.docbuilder import BuilderError, build_dataset, chunks, parse_pair, server_teacher
from muse_desktop.base.events import CancelToken, Cancelled, Done, Progress


@pytest.fixture
def documents(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "nile.txt").write_text("The Nile is the longest river in Africa.\n\nIt flooded every summer.\n")
    (folder / "pyramids.md").write_text("# Pyramids\n\nThe pyramids of Giza are tombs.\n")
    (folder / "museum.html").write_text("<html><style>p {color: red}</style><body><h1>Museum</h1>"
                                        "<p>The museum opens at nine.</p><script>alert(1)</script></body></html>")
    (folder / "image.png").write_bytes(b"\x89PNG")
    return folder


class Teacher:
    """An OpenAI-compatible /v1/chat/completions server on 127.0.0.1 with scripted replies."""

    def __init__(self):
        self.prompts: list[str] = []
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                teacher.prompts.append(prompt)
                if "Text:\n" not in prompt:  # a self-instruct request
                    user_type = re.search(r"different question (.+?) might ask", prompt)[1]
                    text = f"How do rivers reach the sea, {len(teacher.prompts)}?"
                else:
                    user_type = re.search(r"question that (.+?) might ask", prompt)[1]
                    text = prompt.split("Text:\n", 1)[1]
                if "Text:\n" not in prompt:
                    reply = f"Question: {text}\nAnswer: Down the hills, {user_type}."
                elif "opens at nine" in text and user_type == "Elderly":
                    reply = "Sorry, I cannot help with that."  # not the asked-for form
                else:
                    reply = f"Question: What does this say, for {user_type}?\nAnswer: {text.splitlines()[0]}"
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_documents_become_paragraph_chunks_without_markup(documents):
    parts = chunks(documents, max_chars=60)
    sources = [c.source for c in parts]
    assert set(sources) == {"nile.txt", "pyramids.md", "museum.html"}
    html_text = next(c.text for c in parts if c.source == "museum.html")
    assert "opens at nine" in html_text and "alert" not in html_text and "color" not in html_text
    assert chunks(documents, max_chars=60) == parts  # stable ids: resuming finds the same chunks
    assert parse_pair("Question: Why?\nAnswer: Because.") == ("Why?", "Because.")
    assert parse_pair("just talk") is None and parse_pair("Question: \nAnswer: x") is None


def test_a_server_teacher_writes_triples_and_a_cancelled_run_resumes(documents, tmp_path):
    teacher = Teacher()
    try:
        out = tmp_path / "built.jsonl"
        ask = server_teacher(teacher.url)
        token = CancelToken()
        with pytest.raises(Cancelled):
            for event in build_dataset(documents, ["Child", "Elderly"], out, ask, max_chars=60, cancel=token):
                if isinstance(event, Progress) and event.done == 3:
                    token.cancel()
        assert len(teacher.prompts) == 3
        events = list(build_dataset(documents, ["Child", "Elderly"], out, ask, max_chars=60))
        total = len(chunks(documents, max_chars=60)) * 2
        assert len(teacher.prompts) == total  # nothing asked twice
        done = events[-1]
        assert isinstance(done, Done) and done.data["skipped"] == 1
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == total - 1 and len({(r["question"], r["answer"]) for r in rows}) == len(rows)
        assert done.data["per_user_type"] == {"Child": total // 2, "Elderly": total // 2 - 1}
        assert all("make Child understand" in p or "make Elderly understand" in p for p in teacher.prompts)
        from muse_desktop.data.datasets import Format, load_dataset

        report = load_dataset(out)
        assert report.format == Format.MUSE and len(report.examples) == len(rows)
    finally:
        teacher.close()


def test_an_unreachable_teacher_is_said_plainly(documents, tmp_path):
    with pytest.raises(BuilderError, match="Could not reach the teacher server"):
        list(build_dataset(documents, ["Child"], tmp_path / "x.jsonl", server_teacher("http://127.0.0.1:9/v1")))
    with pytest.raises(BuilderError, match="No .txt, .md or .html"):
        list(build_dataset(tmp_path / "x.jsonl", ["Child"], tmp_path / "y.jsonl", lambda p: ""))


def test_the_loaded_model_can_be_the_teacher(documents, tmp_path, tiny_gguf):
    from muse_desktop.chat.engine import ChatEngine, EngineSettings
    from muse_desktop.models.demo_model import Variant
    from muse_desktop.data.docbuilder import engine_teacher

    engine = ChatEngine(str(tiny_gguf[Variant.MINI_4K]), EngineSettings(threads=2, context_length=1024))
    try:
        events = list(build_dataset(documents, ["Child"], tmp_path / "t.jsonl", engine_teacher(engine, 16),
                                    max_chars=60))
    finally:
        engine.close()
    done = events[-1]
    # Random weights write nonsense, which the builder skips (and counts) rather than keeping.
    assert sum(done.data["per_user_type"].values()) + done.data["skipped"] == len(chunks(documents, 60))


def test_build_data_and_augment_from_the_command_line(documents, tmp_path, tiny_gguf, capsys):
    from muse_desktop.cli import main
    from muse_desktop.models.demo_model import Variant

    teacher = Teacher()
    try:
        assert main(["build-data", str(documents), "--out", str(tmp_path / "b.jsonl"), "--server", teacher.url,
                     "--user-types", "Child"]) == 0
    finally:
        teacher.close()
    assert "question/answer pairs (Child:" in capsys.readouterr().out
    assert main(["augment", str(tmp_path / "b.jsonl"), "--count", "2", "--out", str(tmp_path / "more.jsonl"),
                 "--model", str(tiny_gguf[Variant.MINI_4K])]) == 0
    assert "for review" in capsys.readouterr().out and (tmp_path / "more.jsonl").exists()


def test_the_data_tools_window_builds_from_documents_and_reviews_self_instruct(qtbot, documents, tmp_path):
    from muse_desktop.ui.datatools import DataToolsDialog

    teacher = Teacher()
    try:
        dialog = DataToolsDialog()
        qtbot.addWidget(dialog)
        dialog.server.setText(teacher.url)
        dialog.folder.setText(str(documents))
        dialog.output.setText(str(tmp_path / "built.jsonl"))
        dialog.user_types.setText("Child")
        dialog.build()
        qtbot.waitUntil(lambda: dialog.worker is None, timeout=30000)
        assert "question/answer pairs (Child:" in dialog.status.text()
        rows = (tmp_path / "built.jsonl").read_text().splitlines()
        assert len(rows) == len(chunks(documents))
        dialog.seeds.setText(str(tmp_path / "built.jsonl"))
        dialog.count.setValue(3)
        dialog.augment()
        qtbot.waitUntil(lambda: dialog.worker is None, timeout=30000)
        assert "Self-instruct:" in dialog.status.text()
        # The scripted teacher asks nearly the same question each time: one survives the ROUGE-L filter.
        assert dialog.candidates.count() == 1 and "near-duplicate 2" in dialog.status.text()
        assert dialog.ticked()[0]["question"].startswith("How do rivers reach the sea")
        dialog.save_kept(str(tmp_path / "more.jsonl"))
        dialog.candidates.item(0).setCheckState(Qt.Unchecked)  # dropped: nothing more is saved
        dialog.save_kept(str(tmp_path / "more.jsonl"))
        saved = (tmp_path / "more.jsonl").read_text().splitlines()
        assert len(saved) == 1 and json.loads(saved[0])["answer"] == "Down the hills, Child."
        dialog.close()
    finally:
        teacher.close()
