"""Downloads against a hub on 127.0.0.1: resume, checksums, free space, clear failures; then "Get MUsE"."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from hub_server import COMMIT, FakeHub

from muse_desktop.models import download as dl
from muse_desktop.models.download import DownloadError, download_repo, list_repo
from muse_desktop.base.events import CancelToken, Cancelled, Done, Log, Progress


def run(events):
    return list(events)


@pytest.fixture
def hub_root(tmp_path):
    root = tmp_path / "hub"
    repo = root / "someone" / "model"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text('{"a": 1}\n')
    (repo / "weights.safetensors").write_bytes(os.urandom(3 * dl.CHUNK + 12345))
    (repo / "sub").mkdir()
    (repo / "sub" / "notes.txt").write_text("hello\n")
    return root


def same_tree(a: Path, b: Path, names) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


NAMES = ["config.json", "weights.safetensors", "sub/notes.txt"]


def test_listing_names_the_commit_sizes_and_checksums(hub_root):
    with FakeHub(hub_root) as hub:
        listing = list_repo("someone/model", endpoint=hub.endpoint)
    assert listing.commit == COMMIT
    by_name = {f.name: f for f in listing.files}
    weights = (hub_root / "someone/model/weights.safetensors").read_bytes()
    assert by_name["weights.safetensors"].sha256 == hashlib.sha256(weights).hexdigest()
    assert by_name["weights.safetensors"].size == len(weights)
    assert by_name["config.json"].sha256 is None and by_name["config.json"].git_sha1
    assert [f.name for f in listing.select(["*.json", "*.safetensors"])] == ["config.json", "weights.safetensors"]


def test_a_repository_downloads_pinned_to_the_commit_and_checked(hub_root, tmp_path):
    dest = tmp_path / "out"
    with FakeHub(hub_root) as hub:
        events = run(download_repo("someone/model", dest, endpoint=hub.endpoint))
        files = [p for p, _ in hub.requests if "/resolve/" in p]
    assert same_tree(hub_root / "someone/model", dest, NAMES)
    assert all(f"/resolve/{COMMIT}/" in p for p in files)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == sum((dest / n).stat().st_size for n in NAMES)
    assert isinstance(events[-1], Done) and events[-1].path == str(dest)
    assert not (dest / dl.PARTIAL_DIR).exists()


def test_a_second_run_fetches_nothing_again(hub_root, tmp_path):
    dest = tmp_path / "out"
    with FakeHub(hub_root) as hub:
        run(download_repo("someone/model", dest, endpoint=hub.endpoint))
        before = hub.bytes_sent
        run(download_repo("someone/model", dest, endpoint=hub.endpoint))
        assert hub.bytes_sent == before


def test_a_dropped_connection_resumes_with_a_range_request(hub_root, tmp_path):
    dest = tmp_path / "out"
    size = (hub_root / "someone/model/weights.safetensors").stat().st_size
    with FakeHub(hub_root) as hub:
        hub.drop_after["weights.safetensors"] = dl.CHUNK + 777
        events = run(download_repo("someone/model", dest, endpoint=hub.endpoint))
        ranges = hub.range_requests("weights.safetensors")
        sent = hub.bytes_sent
    assert same_tree(hub_root / "someone/model", dest, NAMES)
    assert ranges and int(ranges[0].removeprefix("bytes=").rstrip("-")) > 0
    assert sent < size * 1.5  # the part that arrived was not fetched again
    assert any(isinstance(e, Log) and "Connection lost" in e.message for e in events)


def test_cancel_keeps_the_partial_file_and_the_next_run_continues(hub_root, tmp_path):
    dest = tmp_path / "out"
    token = CancelToken()
    size = (hub_root / "someone/model/weights.safetensors").stat().st_size
    with FakeHub(hub_root) as hub:
        with pytest.raises(Cancelled):
            for event in download_repo("someone/model", dest, endpoint=hub.endpoint, cancel=token):
                if isinstance(event, Progress) and event.message == "weights.safetensors" and event.done > 0:
                    token.cancel()
        partial = dest / dl.PARTIAL_DIR / "weights.safetensors.incomplete"
        kept = partial.stat().st_size
        assert 0 < kept < size and not (dest / "weights.safetensors").exists()
        run(download_repo("someone/model", dest, endpoint=hub.endpoint))
        assert hub.range_requests("weights.safetensors") == [f"bytes={kept}-"]
    assert same_tree(hub_root / "someone/model", dest, NAMES)


def test_a_server_that_ignores_ranges_still_gives_a_correct_file(hub_root, tmp_path):
    dest = tmp_path / "out"
    with FakeHub(hub_root) as hub:
        hub.ignore_range = True
        hub.drop_after["weights.safetensors"] = 5000
        run(download_repo("someone/model", dest, endpoint=hub.endpoint))
    assert same_tree(hub_root / "someone/model", dest, NAMES)


@pytest.mark.parametrize("name", ["weights.safetensors", "config.json"])
def test_damaged_bytes_are_refused_and_never_get_the_final_name(hub_root, tmp_path, name):
    dest = tmp_path / "out"
    with FakeHub(hub_root) as hub:
        hub.corrupt.add(name)
        with pytest.raises(DownloadError, match="damaged"):
            run(download_repo("someone/model", dest, endpoint=hub.endpoint))
    assert not (dest / name).exists()
    assert not (dest / dl.PARTIAL_DIR / (name + ".incomplete")).exists()


def test_not_enough_disk_space_is_said_before_downloading(hub_root, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**12, 10**12 - 1000, 1000))
    with FakeHub(hub_root) as hub:
        with pytest.raises(DownloadError, match="Not enough free disk space"):
            run(download_repo("someone/model", tmp_path / "out", endpoint=hub.endpoint))
        assert not [p for p, _ in hub.requests if "/resolve/" in p]


def test_missing_repository_and_unreachable_hub_get_plain_messages(hub_root, tmp_path):
    with FakeHub(hub_root) as hub:
        with pytest.raises(DownloadError, match="not found on the hub"):
            list_repo("nobody/nothing", endpoint=hub.endpoint)
        endpoint = hub.endpoint
    with pytest.raises(DownloadError, match="Could not reach 127.0.0.1"):
        list_repo("someone/model", endpoint=endpoint)  # the server is gone


def test_a_listing_cannot_write_outside_the_folder(hub_root, tmp_path):
    with FakeHub(hub_root) as hub:
        hub.unsafe_name = "../../evil.txt"
        with pytest.raises(DownloadError, match="unsafe file name"):
            run(download_repo("someone/model", tmp_path / "out", endpoint=hub.endpoint))
    assert not (tmp_path / "evil.txt").exists()


# --- Get MUsE: download, merge, convert, quantize, chat ----------------------------------------


@pytest.fixture
def muse_hub(tmp_path, tiny_model, adapters):
    root = tmp_path / "muse-hub"
    shutil.copytree(tiny_model, root / "microsoft" / "Phi-3-mini-128k-instruct")
    (root / "microsoft" / "Phi-3-mini-128k-instruct" / "modeling_phi3.py").write_text("raise SystemExit('remote code')\n")
    shutil.copytree(adapters["all"], root / "muse" / "muse-3-adapter")
    return root


def test_get_muse_builds_the_same_model_as_converting_locally(muse_hub, tmp_path, tiny_model, adapters):
    from converters.convert import convert_model
    from converters.quantize import quantize
    from muse_desktop.chat.engine import ChatEngine, EngineSettings, Sampling
    from muse_desktop.models.getmuse import get_muse
    from muse_desktop.base.prompting.contract import Role, Turn

    models = tmp_path / "models"
    with FakeHub(muse_hub) as hub:
        events = run(get_muse(models, adapter_repo="muse/muse-3-adapter", endpoint=hub.endpoint))
    final = Path(events[-1].path)
    assert final.name == "muse-phi3-mini-128k-Q4_K_M.gguf" and final.parent == models
    assert not (models / "Phi-3-mini-128k-instruct" / "modeling_phi3.py").exists()  # no remote code fetched
    assert not list(models.glob(".*f16.gguf"))  # the intermediate is gone
    assert any(isinstance(e, Progress) and e.unit == "bytes" for e in events)

    # The independent path: the same checkpoint and adapter, converted and quantized from disk.
    local_f16, local_q = tmp_path / "local-f16.gguf", tmp_path / "local-q.gguf"
    run(convert_model(tiny_model, local_f16, "f16", adapter_dir=adapters["all"], name=None))
    run(quantize(local_f16, local_q, "Q4_K_M"))
    from gguf import GGUFReader

    ours, theirs = GGUFReader(final), GGUFReader(local_q)
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, other in zip(ours.tensors, theirs.tensors, strict=True):
        assert mine.tensor_type == other.tensor_type and bytes(mine.data) == bytes(other.data), mine.name

    engine = ChatEngine(str(final), EngineSettings(threads=2, context_length=256))
    try:
        turns = [Turn(Role.USER, "Hello")]
        done = run(engine.generate("Child", turns, None, Sampling(max_new_tokens=4, temperature=0.0)))[-1]
        assert isinstance(done, Done) and done.data["token_ids"]
    finally:
        engine.close()


def test_get_muse_with_the_adapter_set_to_none_sets_up_the_base_alone_and_says_so(muse_hub, tmp_path, monkeypatch):
    from muse_desktop.models.getmuse import get_muse

    monkeypatch.setenv("MUSE_ADAPTER_REPO", "none")
    with FakeHub(muse_hub) as hub:
        events = run(get_muse(tmp_path / "models", endpoint=hub.endpoint))
        again = run(get_muse(tmp_path / "models", endpoint=hub.endpoint))
    assert any(isinstance(e, Log) and "without MUsE" in e.message for e in events)
    assert Path(events[-1].path).name == "phi3-mini-128k-instruct-Q4_K_M.gguf"
    assert len(again) == 1 and "already here" in again[0].message


def test_get_muse_from_the_command_line(muse_hub, tmp_path, capsys):
    from muse_desktop.cli import main
    from muse_desktop.household.settings import load_settings

    with FakeHub(muse_hub) as hub:
        code = main(["get-muse", "--endpoint", hub.endpoint, "--adapter-repo", "muse/muse-3-adapter",
                     "--models-dir", str(tmp_path / "models"), "--use"])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert load_settings().settings.model_path == str(tmp_path / "models" / "muse-phi3-mini-128k-Q4_K_M.gguf")
        assert "MiB" in out.err and "The model is ready" in out.out
        code = main(["get-muse", "--endpoint", hub.endpoint, "--adapter-repo", "nobody/nothing",
                     "--models-dir", str(tmp_path / "other")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("muse-desktop: ") and "not found on the hub" in last
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["C:/Windows/evil.dll", "C:evil.txt", "sub\\..\\..\\evil.txt", "ok/../../evil",
                                  "weights\x00.bin", "line\nbreak.txt", "CON", "sub/aux.txt", "nul.json",
                                  "COM1.log", "trailing./x", "stream.txt:hidden", "a/./b", "a//b"])
def test_names_that_are_unsafe_on_any_os_are_refused(hub_root, tmp_path, name):
    with FakeHub(hub_root) as hub:
        hub.unsafe_name = name
        with pytest.raises(DownloadError, match="unsafe file name"):
            run(download_repo("someone/model", tmp_path / "out", endpoint=hub.endpoint))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_listed_file_without_a_checksum_is_refused(hub_root, tmp_path):
    with FakeHub(hub_root) as hub:
        hub.no_checksum = {"sub/notes.txt"}
        with pytest.raises(DownloadError, match="without a checksum"):
            run(download_repo("someone/model", tmp_path / "out", endpoint=hub.endpoint))
    assert not (tmp_path / "out" / "sub" / "notes.txt").exists()
