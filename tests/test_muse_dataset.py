"""The MUsE dataset: its field names, its rendered prompts, every file format it may come in, and the hub."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import pytest
from hub_server import COMMIT, FakeHub

from muse_desktop.data.datasets import DatasetError, Format, load_dataset
from muse_desktop.base.prompting.contract import Role, Turn, parse_prompt, prompt_text

PAIRS = [
    ("Elderly", "Why is a balanced diet important?", "It gives your body what it needs to stay well."),
    ("Child", "What is a cloud?\nWhy is it white?", "A cloud is lots of tiny water drops floating together."),
    ("Nurse", "How does a vaccine work?", "It shows the immune system a harmless copy, so it learns."),
    ("Flight Attendant", "Why do ears pop on a plane?", "The air pressure changes, like on a fast lift ride."),
    ("Child", "  Spaces at both ends  ", "Kept as they were, byte for byte.\n"),
]


def muse_records() -> list[dict]:
    """Rows as MUsE's training code reads them: the question is the whole rendered prompt."""
    return [{"questions": prompt_text(user, [Turn(Role.USER, question)], add_generation_prompt=True),
             "answers": answer, "users": user} for user, question, answer in PAIRS]


def write_all(folder: Path, records: list[dict]) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"muse.{name}" for name in ("parquet", "jsonl", "csv", "pkl", "json")}
    pq.write_table(pa.Table.from_pylist(records), paths["parquet"])
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    # Three parallel lists, the shape MUsE's training code loads from its pickle.
    columns = {key: [r[key] for r in records] for key in records[0]}
    paths["pkl"].write_bytes(pickle.dumps(columns))
    paths["json"].write_text(json.dumps(records, indent=1), encoding="utf-8")
    return paths


def test_the_same_records_in_every_format_give_identical_examples(tmp_path):
    paths = write_all(tmp_path, muse_records())
    reports = {name: load_dataset(path) for name, path in paths.items()}
    keys = {name: [e.key() for e in report.examples] for name, report in reports.items()}
    assert all(r.format == Format.MUSE for r in reports.values())
    assert all(not r.problems for r in reports.values()), {n: r.problems for n, r in reports.items()}
    assert len({json.dumps(k) for k in keys.values()}) == 1, keys
    examples = reports["parquet"].examples
    assert [(e.user_type, e.turns[0].content, e.turns[1].content) for e in examples] == PAIRS
    assert reports["pkl"].user_types == {"Elderly": 1, "Child": 2, "Nurse": 1, "Flight Attendant": 1}


def test_rendered_prompts_round_trip_byte_for_byte():
    for record, (user, question, _answer) in zip(muse_records(), PAIRS, strict=True):
        assert parse_prompt(record["questions"]) == (user, question)
        again = prompt_text(*parse_prompt(record["questions"])[:1], [Turn(Role.USER, question)],
                            add_generation_prompt=True)
        assert again.encode("utf-8") == record["questions"].encode("utf-8")


def test_a_stored_prompt_that_does_not_come_back_exactly_is_reported_with_its_row(tmp_path):
    records = muse_records()
    records[1]["questions"] = records[1]["questions"].replace("<|user|>", "<|user|> ")  # a stray space
    records[3]["users"] = "Nurse"  # the prompt is for a flight attendant
    records[4]["questions"] = "<|user|>Tell me a story<|end|>\n<|assistant|>\n"  # no MUsE instruction
    path = tmp_path / "muse.parquet"
    write_all(tmp_path, records)
    report = load_dataset(path)
    by_row = {p.line: p for p in report.problems}
    assert set(by_row) == {2, 4, 5}, report.problems
    assert by_row[2].level == "warning" and "from character 9" in by_row[2].reason
    assert str(by_row[2]).startswith("row 2: the stored prompt differs")
    assert by_row[4].level == "error" and "written for 'Flight Attendant'" in by_row[4].reason
    assert by_row[5].level == "error" and "not a MUsE prompt" in by_row[5].reason
    assert len(report.examples) == 3


def test_the_data_check_counts_rows_user_types_and_tokens(tmp_path, hf_tokenizer):
    from muse_desktop.base.prompting.hf import HFTokenizer

    report = load_dataset(write_all(tmp_path, muse_records())["jsonl"], tokenizer=HFTokenizer(hf_tokenizer))
    assert report.rows == 5 and report.tokens > report.trained_tokens > 0
    assert "5 rows, 5 usable" in report.summary() and "4 user types" in report.summary()


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_tries_to_call_a_function_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "code-ran"
    data = {"questions": ["q"], "answers": [RunsCode(marker)], "users": ["Child"]}
    path = tmp_path / "muse.pkl"
    path.write_bytes(pickle.dumps(data))
    assert b"system" in path.read_bytes()  # the pickle really names os.system
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert "muse.pkl is a pickle that is not opened" in message and f"{os.system.__module__}.system" in message
    assert "run code" in message
    assert not marker.exists()


def test_a_pickle_of_anything_but_plain_data_is_refused_with_the_reason(tmp_path):
    import collections

    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps([collections.OrderedDict(questions="q")]))
    with pytest.raises(DatasetError, match="collections.OrderedDict"):
        load_dataset(path, Format.MUSE)
    path.write_bytes(pickle.dumps({"questions": [{1, 2}], "answers": ["a"], "users": ["Child"]}))
    with pytest.raises(DatasetError, match="holds a set"):
        load_dataset(path, Format.MUSE)


def test_a_pickle_that_shares_its_lists_is_refused_at_once(tmp_path):
    """Found in review: 357 bytes whose lists share lists 39 levels deep (2**39 items) hung the reader."""
    import time

    bomb = b"\x80\x02]q\x00" + b"".join(b"](h%ch%ceq%c" % (k - 1, k - 1, k) for k in range(1, 40)) + b"."
    path = tmp_path / "bomb.pkl"
    path.write_bytes(bomb)
    started = time.monotonic()
    with pytest.raises(DatasetError, match="twice"):
        load_dataset(path, Format.MUSE)
    assert time.monotonic() - started < 5  # a guard against a hang, not a speed measurement
    itself = []
    itself.append(itself)
    path.write_bytes(pickle.dumps({"questions": itself, "answers": ["a"], "users": ["Child"]}))
    with pytest.raises(DatasetError, match="twice"):
        load_dataset(path, Format.MUSE)


@pytest.fixture
def dataset_hub(tmp_path) -> Path:
    """seohyunqkr/MUsE as a dataset repository, with a loading script that must never be fetched."""
    root = tmp_path / "hub"
    repo = root / "datasets" / "seohyunqkr" / "MUsE"
    write_all(tmp_path / "files", muse_records())
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train.parquet").write_bytes((tmp_path / "files" / "muse.parquet").read_bytes())
    (repo / "README.md").write_text("MUsE (tiny)\n")
    (repo / "MUsE.py").write_text("raise SystemExit('a loading script must never be fetched')\n")
    return root


def test_get_dataset_from_the_command_line_through_the_dataset_api(dataset_hub, tmp_path, capsys):
    from muse_desktop.cli import main

    out_dir = tmp_path / "data"
    with FakeHub(dataset_hub) as hub:
        hub.drop_after["data/train.parquet"] = 100  # resumable like the models
        code = main(["get-dataset", "seohyunqkr/MUsE", "--endpoint", hub.endpoint, "--out", str(out_dir)])
        requests = [path for path, _ in hub.requests]
        ranges = hub.range_requests("data/train.parquet")
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "/api/datasets/seohyunqkr/MUsE/revision/main?blobs=true" in requests
    assert f"/datasets/seohyunqkr/MUsE/resolve/{COMMIT}/data/train.parquet" in requests
    assert ranges == ["bytes=100-"]
    assert not [p for p in requests if p.endswith((".py", "README.md"))]
    assert (out_dir / "data" / "train.parquet").is_file()
    assert "5 rows, 5 usable" in out.out and "4 user types" in out.out
    assert "       2  Child" in out.out


def test_a_missing_dataset_gets_a_plain_message(dataset_hub, tmp_path, capsys):
    from muse_desktop.cli import main

    with FakeHub(dataset_hub) as hub:
        code = main(["get-dataset", "nobody/nothing", "--endpoint", hub.endpoint, "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 1 and "The data set 'nobody/nothing' was not found on the hub" in err
