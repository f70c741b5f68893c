"""Training data: read MUsE triples, Alpaca, chat transcripts or plain text; check every row.

Nothing here needs torch. :func:`load_dataset` reads a file, detects (or is told) its
format, and returns a :class:`Report`: the good examples, and for every bad row its
line number and the reason. Rows that cannot be used are skipped; doubtful ones
(an unknown user type) are kept with a warning. With a tokenizer the report also
counts tokens through the prompt contract, which is how the trainer will see them,
and refuses rows longer than the cutoff.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from muse_desktop.prompting.contract import (
    IGNORE_INDEX,
    Encoded,
    InstructionTemplate,
    PromptError,
    Role,
    TokenizerLike,
    TrainOn,
    Turn,
    build_pieces,
    encode,
)


class Format:
    """Dataset formats, by the name used in configs and on the command line."""

    MUSE = "muse"  # user_type, question, answer (JSONL or CSV)
    ALPACA = "alpaca"  # instruction, input, output (JSONL or CSV)
    MESSAGES = "messages"  # {"messages": [{"role", "content"}, ...]} (OpenAI / ShareGPT style)
    TEXT = "text"  # plain text, for continued pre-training
    ALL = (MUSE, ALPACA, MESSAGES, TEXT)


class DatasetError(ValueError):
    """The file cannot be used at all (missing, unreadable, no valid rows)."""


_SHAREGPT_ROLES = {"human": Role.USER, "user": Role.USER, "gpt": Role.ASSISTANT, "assistant": Role.ASSISTANT,
                   "bot": Role.ASSISTANT, "model": Role.ASSISTANT}


@dataclass
class Example:
    line: int
    user_type: str | None  # None: no MUsE instruction (Alpaca, transcripts)
    turns: list[Turn] = field(default_factory=list)
    text: str | None = None  # plain text rows

    def key(self) -> tuple:
        return (self.user_type, tuple((t.role, t.content.strip()) for t in self.turns), self.text)

    def encoded(self, tokenizer: TokenizerLike, template: InstructionTemplate | str | None = None,
                train_on: str = TrainOn.ASSISTANT) -> Encoded:
        """Token ids and labels, exactly as the trainer uses them."""
        if self.text is not None:
            ids = ([tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else [])
            ids += tokenizer.encode_text(self.text)
            return Encoded(ids, [IGNORE_INDEX] + ids[1:] if tokenizer.add_bos else list(ids))
        pieces = build_pieces(self.user_type, self.turns, template, add_generation_prompt=False, train_on=train_on)
        return encode(pieces, tokenizer)


@dataclass
class Problem:
    line: int
    reason: str
    level: str = "error"  # error: the row is skipped; warning: kept

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" + (" (kept)" if self.level == "warning" else "")


@dataclass
class Report:
    path: Path
    format: str
    rows: int = 0
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tokens: int = 0  # all tokens of the valid examples (0 without a tokenizer)
    trained_tokens: int = 0
    user_types: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(1 for p in self.problems if p.level == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for p in self.problems if p.level == "warning")

    def summary(self) -> str:
        text = (f"{self.path.name}: {self.format} format, {self.rows} rows, {len(self.examples)} usable, "
                f"{self.skipped} skipped, {self.warnings} warnings")
        if self.tokens:
            text += f", {self.tokens:,} tokens ({self.trained_tokens:,} trained on)"
        return text

    def require_examples(self) -> None:
        if not self.examples:
            first = "; ".join(str(p) for p in self.problems[:3])
            raise DatasetError(f"{self.path.name} has no usable rows" + (f" ({first})" if first else "") + ".")


def detect_format(path: str | Path) -> str:
    """Guess the format from the file's extension and its first record."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md"):
        return Format.TEXT
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            head = handle.read(65536)
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc.strerror or exc}") from None
    keys: set[str] = set()
    if suffix == ".csv":
        keys = {k.strip().lower() for k in next(csv.reader(io.StringIO(head)), [])}
    else:
        for line in head.splitlines():
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    break
                keys = set(first) if isinstance(first, dict) else set()
                break
    if {"messages", "conversations"} & keys:
        return Format.MESSAGES
    if {"question", "answer"} <= keys:
        return Format.MUSE
    if {"instruction", "output"} <= keys:
        return Format.ALPACA
    if suffix in (".jsonl", ".json", ".csv"):
        raise DatasetError(
            f"Cannot tell the format of {path.name}: expected fields user_type/question/answer (MUsE), "
            "instruction/input/output (Alpaca) or messages (chat transcripts). Choose the format by hand."
        )
    return Format.TEXT


def _rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record or None, problem) for every row of a JSONL or CSV file."""
    with open(path, encoding="utf-8-sig", errors="strict", newline="") as handle:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(handle)
            if reader.fieldnames:
                reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
            for record in reader:
                yield reader.line_num, record, None
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(record, dict):
                yield number, None, "not a JSON object"
                continue
            yield number, record, None


def _field(record: dict, name: str, required: bool = True) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise ValueError(f"missing field '{name}'")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field '{name}' is not text")
    if required and not value.strip():
        raise ValueError(f"empty field '{name}'")
    return value


def _example(fmt: str, number: int, record: dict) -> Example:
    if fmt == Format.MUSE:
        user_type = _field(record, "user_type").strip()
        return Example(number, user_type, [Turn(Role.USER, _field(record, "question")),
                                           Turn(Role.ASSISTANT, _field(record, "answer"))])
    if fmt == Format.ALPACA:
        instruction, extra = _field(record, "instruction"), _field(record, "input", required=False)
        question = f"{instruction}\n{extra}" if extra.strip() else instruction
        return Example(number, None, [Turn(Role.USER, question), Turn(Role.ASSISTANT, _field(record, "output"))])
    messages = record.get("messages", record.get("conversations"))
    if not isinstance(messages, list) or not messages:
        raise ValueError("missing or empty 'messages'")
    turns: list[Turn] = []
    user_type = record.get("user_type") if isinstance(record.get("user_type"), str) else None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {index + 1} is not an object")
        role = message.get("role", message.get("from"))
        content = message.get("content", message.get("value"))
        if role == "system":
            continue  # the MUsE instruction takes the system prompt's place
        if role not in _SHAREGPT_ROLES or not isinstance(content, str):
            raise ValueError(f"message {index + 1} has an unknown role or no text")
        if not content.strip():
            raise ValueError(f"message {index + 1} is empty")
        turns.append(Turn(_SHAREGPT_ROLES[role], content))
    if not turns or turns[-1].role != Role.ASSISTANT:
        raise ValueError("the conversation must end with an assistant message")
    for index, turn in enumerate(turns):
        if turn.role != (Role.USER if index % 2 == 0 else Role.ASSISTANT):
            raise ValueError("messages must alternate user and assistant, starting with the user")
    return Example(number, user_type.strip() if user_type else None, turns)


def _text_examples(path: Path) -> Iterator[tuple[int, Example | None, str | None]]:
    """Plain text: one example per paragraph block (blank lines separate them)."""
    text = path.read_text(encoding="utf-8")
    block: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            yield start, Example(start, None, text="\n".join(block)), None
            block = []


def load_dataset(
    path: str | Path,
    fmt: str | None = None,
    tokenizer: TokenizerLike | None = None,
    cutoff: int | None = None,
    template: InstructionTemplate | str | None = None,
    train_on: str = TrainOn.ASSISTANT,
    catalog=None,
) -> Report:
    """Read and check a dataset file; every bad row gets a line number and a reason."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"There is no dataset file at {path}.")
    fmt = fmt or detect_format(path)
    if fmt not in Format.ALL:
        raise DatasetError(f"Unknown dataset format '{fmt}'; choose one of {', '.join(Format.ALL)}.")
    if catalog is None:
        from muse_desktop.usertypes import load_catalog

        catalog = load_catalog()
    report = Report(path, fmt)
    seen: dict[tuple, int] = {}
    try:
        rows = _text_examples(path) if fmt == Format.TEXT else _rows(path, fmt)
        for number, record, problem in rows:
            report.rows += 1
            if problem:
                report.problems.append(Problem(number, problem))
                continue
            try:
                example = record if isinstance(record, Example) else _example(fmt, number, record)
            except ValueError as exc:
                report.problems.append(Problem(number, str(exc)))
                continue
            key = example.key()
            if key in seen:
                report.problems.append(Problem(number, f"duplicate of line {seen[key]}"))
                continue
            seen[key] = number
            if example.user_type is not None:
                known = catalog.by_prompt_name(example.user_type) or catalog.get(example.user_type)
                if known is None:
                    report.problems.append(Problem(number, f"unknown user type '{example.user_type}'", "warning"))
            if tokenizer is not None:
                try:
                    encoded = example.encoded(tokenizer, template, train_on)
                except PromptError as exc:
                    report.problems.append(Problem(number, str(exc)))
                    continue
                if cutoff and len(encoded.input_ids) > cutoff and fmt != Format.TEXT:
                    report.problems.append(Problem(
                        number, f"longer than the cutoff ({len(encoded.input_ids)} tokens > {cutoff})"))
                    continue
                report.tokens += len(encoded.input_ids)
                report.trained_tokens += encoded.trained_count
            if example.user_type:
                report.user_types[example.user_type] = report.user_types.get(example.user_type, 0) + 1
            report.examples.append(example)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    except csv.Error as exc:
        raise DatasetError(f"{path.name} is not valid CSV ({exc}).") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {path}: {exc.strerror or exc}") from None
    return report
