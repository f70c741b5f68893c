"""Training data: read MUsE triples, Alpaca, chat transcripts or plain text; check every row.

Nothing here needs torch. :func:`load_dataset` reads a file (JSON Lines, JSON, CSV,
Parquet, or a pickle of plain data), detects (or is told) its format, and returns a
:class:`Report`: the good examples, and for every bad row its line (or row) number
and the reason. Rows that cannot be used are skipped; doubtful ones (an unknown user
type) are kept with a warning. With a tokenizer the report also counts tokens through
the prompt contract, which is how the trainer will see them, and refuses rows longer
than the cutoff.

MUsE's published data names its fields ``questions``, ``answers`` and ``users``, and its
questions are already rendered prompts; those are parsed back through the prompt
contract and rendered again, and a row whose text does not come back byte for byte
is reported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from muse_desktop.base.errors import MuseError
from muse_desktop.base.prompting.contract import (
    IGNORE_INDEX,
    Encoded,
    InstructionTemplate,
    PromptError,
    Role,
    Special,
    TemplateError,
    TokenizerLike,
    TrainOn,
    Turn,
    build_pieces,
    encode,
    parse_prompt,
    prompt_text,
)


class Format:
    """Dataset formats, by the name used in configs and on the command line."""

    MUSE = "muse"  # user_type, question, answer (JSONL or CSV)
    ALPACA = "alpaca"  # instruction, input, output (JSONL or CSV)
    MESSAGES = "messages"  # {"messages": [{"role", "content"}, ...]} (OpenAI / ShareGPT style)
    TEXT = "text"  # plain text, for continued pre-training
    ALL = (MUSE, ALPACA, MESSAGES, TEXT)


class DatasetError(MuseError, ValueError):
    """The file cannot be used at all (missing, unreadable, no valid rows)."""

    exit_code = 2  # the command line: what was given cannot be used


TABLE_SUFFIXES = (".parquet", ".pkl", ".pickle")  # read as a whole, rows numbered from 1
DATA_SUFFIXES = (".jsonl", ".json", ".csv", *TABLE_SUFFIXES)
# MUsE fields: ours, then the names MUsE's own training data uses.
MUSE_FIELDS = {"user_type": ("user_type", "users", "user"), "question": ("question", "questions"),
               "answer": ("answer", "answers")}


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
    unit: str = "line"  # "row" for Parquet, pickles and JSON arrays

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.reason}" + (" (kept)" if self.level == "warning" else "")


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
        if self.user_types:
            text += f", {len(self.user_types)} user types"
        if self.tokens:
            text += f", {self.tokens:,} tokens ({self.trained_tokens:,} trained on)"
        return text

    def require_examples(self) -> None:
        if not self.examples:
            first = "; ".join(str(p) for p in self.problems[:3])
            raise DatasetError(f"{self.path.name} has no usable rows" + (f" ({first})" if first else "") + ".")


def _first_keys(path: Path) -> set[str]:
    for _number, record, _problem in _rows(path):
        return set(record) if isinstance(record, dict) else set()
    return set()


def detect_format(path: str | Path) -> str:
    """Guess the format from the file's extension and its first record."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md"):
        return Format.TEXT
    if suffix in TABLE_SUFFIXES or suffix == ".json":
        keys = {k.strip().lower() for k in _first_keys(path)}
    else:
        try:
            with open(path, encoding="utf-8-sig", errors="replace") as handle:
                head = handle.read(65536)
        except OSError as exc:
            raise DatasetError(f"Cannot read {path}: {exc.strerror or exc}") from None
        keys = set()
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
    if {"question", "answer"} <= keys or {"questions", "answers"} <= keys:
        return Format.MUSE
    if {"instruction", "output"} <= keys:
        return Format.ALPACA
    if suffix in DATA_SUFFIXES:
        raise DatasetError(
            f"Cannot tell the format of {path.name}: expected fields user_type/question/answer (MUsE), "
            "instruction/input/output (Alpaca) or messages (chat transcripts). Choose the format by hand."
        )
    return Format.TEXT


def row_unit(path: Path) -> str:
    return "row" if path.suffix.lower() in TABLE_SUFFIXES or _whole_json(path) is not None else "line"


def _whole_json(path: Path):
    """A .json file's content when it is one JSON document (an array or a table), else None (JSON Lines)."""
    if path.suffix.lower() != ".json":
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError:
        return None
    return value if isinstance(value, (list, dict)) else None


def _table_records(value, name: str) -> list:
    """Records from a list of rows, or from a table of columns ({"questions": [...], ...})."""
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        lengths = {len(v) for v in value.values()}
        if len(lengths) != 1:
            counts = ", ".join(f"{key} {len(v)}" for key, v in value.items())
            raise DatasetError(f"{name} holds columns of different lengths ({counts}), so rows cannot be matched up.")
        keys = list(value)
        return [dict(zip(keys, row, strict=True)) for row in zip(*value.values(), strict=True)]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise DatasetError(f"{name} holds a {type(value).__name__}, not rows or columns.")


def _parquet_records(path: Path) -> list:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("Reading Parquet files needs the training extra: pip install 'muse-desktop[train]'.") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own error types for damaged files
        raise DatasetError(f"{path.name} is not a readable Parquet file ({exc}).") from None


def _pickle_records(path: Path) -> list:
    from muse_desktop.base.safepickle import PickleRefused, load_plain

    try:
        return _table_records(load_plain(path.read_bytes()), path.name)
    except PickleRefused as exc:
        raise DatasetError(f"{path.name} is a pickle that is not opened: {exc}.") from None


def _rows(path: Path, fmt: str | None = None) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line or row number, record or None, problem) for every row of a data file."""
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES or _whole_json(path) is not None:
        if suffix == ".parquet":
            records = _parquet_records(path)
        elif suffix in (".pkl", ".pickle"):
            records = _pickle_records(path)
        else:
            records = _table_records(_whole_json(path), path.name)
        for number, record in enumerate(records, start=1):
            yield (number, record, None) if isinstance(record, dict) else (number, None, "not a record of fields")
        return
    with open(path, encoding="utf-8-sig", errors="strict", newline="") as handle:
        if suffix == ".csv":
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


def _muse_field(record: dict, name: str) -> str:
    present = next((key for key in MUSE_FIELDS[name] if key in record), name)
    return _field(record, present)


def _rendered_question(text: str, user_type: str | None, template, warnings: list[str]) -> tuple[str, str]:
    """(user type, question) of a question stored as a rendered MUsE prompt, checked byte for byte."""
    try:
        parsed_type, question = parse_prompt(text, template)
    except PromptError:
        raise ValueError("the question starts with <|user|> but is not a MUsE prompt "
                         "(<|user|>instruction\\nquestion<|end|>\\n<|assistant|>\\n)") from None
    if user_type is not None and user_type.strip() != parsed_type.strip():
        raise ValueError(f"the user type is '{user_type.strip()}' but the prompt is written for '{parsed_type}'")
    again = prompt_text(parsed_type, [Turn(Role.USER, question)], template, add_generation_prompt=True)
    if again != text:
        at = next((i for i, (a, b) in enumerate(zip(again, text, strict=False)) if a != b), min(len(again), len(text)))
        warnings.append(
            f"the stored prompt differs from the MUsE prompt from character {at + 1} "
            f"(stored {text[max(at - 10, 0):at + 10]!r}, the prompt contract gives {again[max(at - 10, 0):at + 10]!r}); "
            "it is trained with the prompt contract's text")
    return parsed_type, question


def _example(fmt: str, number: int, record: dict, template=None, warnings: list[str] | None = None) -> Example:
    if fmt == Format.MUSE:
        warnings = [] if warnings is None else warnings
        question = _muse_field(record, "question")
        stated = next((record[k] for k in MUSE_FIELDS["user_type"] if isinstance(record.get(k), str)), None)
        if question.startswith(Special.USER):
            user_type, question = _rendered_question(question, stated, template, warnings)
        else:
            user_type = _muse_field(record, "user_type")
        return Example(number, user_type.strip(), [Turn(Role.USER, question),
                                                   Turn(Role.ASSISTANT, _muse_field(record, "answer"))])
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
    """Read and check a dataset file (or a folder of them); every bad row gets a line number and a reason."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, fmt, tokenizer, cutoff, template, train_on, catalog)
    if not path.is_file():
        raise DatasetError(f"There is no dataset file at {path}.")
    fmt = fmt or detect_format(path)
    if fmt not in Format.ALL:
        raise DatasetError(f"Unknown dataset format '{fmt}'; choose one of {', '.join(Format.ALL)}.")
    if catalog is None:
        from muse_desktop.chat.usertypes import load_catalog

        catalog = load_catalog()
    report = Report(path, fmt)
    seen: dict[tuple, int] = {}
    try:
        unit = "line" if fmt == Format.TEXT else row_unit(path)

        def problem_at(number: int, reason: str, level: str = "error") -> None:
            report.problems.append(Problem(number, reason, level, unit))

        rows = _text_examples(path) if fmt == Format.TEXT else _rows(path, fmt)
        for number, record, problem in rows:
            report.rows += 1
            if problem:
                problem_at(number, problem)
                continue
            warnings: list[str] = []
            try:
                example = record if isinstance(record, Example) else _example(fmt, number, record, template, warnings)
            except (ValueError, TemplateError) as exc:
                problem_at(number, str(exc))
                continue
            for warning in warnings:
                problem_at(number, warning, "warning")
            key = example.key()
            if key in seen:
                problem_at(number, f"duplicate of {unit} {seen[key]}")
                continue
            seen[key] = number
            if example.user_type is not None:
                known = catalog.by_prompt_name(example.user_type) or catalog.get(example.user_type)
                if known is None:
                    problem_at(number, f"unknown user type '{example.user_type}'", "warning")
            if tokenizer is not None:
                try:
                    encoded = example.encoded(tokenizer, template, train_on)
                except PromptError as exc:
                    problem_at(number, str(exc))
                    continue
                if cutoff and len(encoded.input_ids) > cutoff and fmt != Format.TEXT:
                    problem_at(number, f"longer than the cutoff ({len(encoded.input_ids)} tokens > {cutoff})")
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


def _load_folder(folder: Path, fmt, tokenizer, cutoff, template, train_on, catalog) -> Report:
    """A downloaded dataset with several data files: one report, the files read in name order."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise DatasetError(f"There are no data files in {folder}.")
    total: Report | None = None
    for file in files:
        part = load_dataset(file, fmt, tokenizer, cutoff, template, train_on, catalog)
        if total is None:
            total = Report(folder, part.format)
        total.rows += part.rows
        total.examples += part.examples
        total.problems += [Problem(p.line, f"{file.name}: {p.reason}", p.level, p.unit) for p in part.problems]
        total.tokens += part.tokens
        total.trained_tokens += part.trained_tokens
        for user_type, count in part.user_types.items():
            total.user_types[user_type] = total.user_types.get(user_type, 0) + count
    return total
