"""Get MUsE against a hub laid out as Hugging Face serves the real repositories.

The hub holds a tiny ``microsoft/Phi-3-mini-128k-instruct`` (config.json with the keys
Microsoft publishes, bf16 weights in two shards, the remote-code .py files) and a tiny
``seohyunqkr/MUsE`` (a real PEFT LoRA with MUsE's r, alpha, dropout and modules, its
config naming the base by hub id, the tokenizer saved beside it as the authors'
code does, and a training_args.bin pickle that must never be fetched).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from helpers import make_peft_adapter
from hub_server import COMMIT, FakeHub

from muse_desktop.models.demo_model import Variant, build_demo_model
from muse_desktop.base.events import Done

BASE = "microsoft/Phi-3-mini-128k-instruct"
MUSE = "seohyunqkr/MUsE"
MUSE_LORA = {"r": 64, "lora_alpha": 64, "lora_dropout": 0.05,
             "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}
NEVER_FETCHED = ("modeling_phi3.py", "configuration_phi3.py", "sample_finetune.py", "training_args.bin", "README.md")


class RunsCode:
    """Pickles to a call of os.system that would leave a file behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _to_bf16_shards(folder: Path) -> None:
    """Store the weights as bf16, as Microsoft's checkpoint does."""
    from safetensors.numpy import load_file

    from converters.safetensors_io import TensorSource, float32_to_bf16, write_safetensors

    total = 0
    for shard in sorted(folder.glob("*.safetensors")):
        arrays = load_file(str(shard))
        sources = [TensorSource(name, "BF16", array.shape, lambda a=array: float32_to_bf16(a))
                   for name, array in arrays.items()]
        tmp = shard.with_suffix(".tmp")
        list(write_safetensors(tmp, sources))
        tmp.replace(shard)
        total += sum(a.size * 2 for a in arrays.values())
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["metadata"]["total_size"] = total
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _microsoft_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update({
        "_name_or_path": "Phi-3-mini-128k-instruct",
        "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                     "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "sliding_window": 262144,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.2",
    })
    assert config["rope_scaling"]["type"] == "longrope"
    (folder / "config.json").write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory, tiny_sp_model) -> Path:
    """The two repositories, file for file as the hub has them (only tiny)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("hf-hub")
    base = build_demo_model(root / BASE, Variant.MINI_128K, tokenizer_model=tiny_sp_model)
    _microsoft_config(base)
    _to_bf16_shards(base)
    assert len(list(base.glob("model-*-of-00002.safetensors"))) == 2
    for name in NEVER_FETCHED[:3]:
        (base / name).write_text("raise SystemExit('remote code must never be fetched')\n")
    (base / "README.md").write_text("Phi-3-mini-128k-instruct (tiny)\n")

    # b_scale 0.3: each module changes by about a tenth of its weight, as a trained LoRA does
    # (the helper's default makes the change as large as the weight itself).
    muse = make_peft_adapter(base, root / MUSE, seed=7, b_scale=0.3, **MUSE_LORA)
    config = json.loads((muse / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = BASE  # as published; PEFT wrote the local folder
    (muse / "adapter_config.json").write_text(json.dumps(config, indent=2))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(muse))  # as the authors' code does
    (muse / "training_args.bin").write_bytes(pickle.dumps(RunsCode(root / "training-args-ran")))
    (muse / "README.md").write_text("MUsE (tiny)\n")
    return root


@pytest.fixture
def hub_copy(real_hub, tmp_path) -> Path:
    """A copy a test may change."""
    root = tmp_path / "hub"
    shutil.copytree(real_hub, root)
    return root


def _fetched(hub: FakeHub) -> list[str]:
    return [path for path, _ in hub.requests if "/resolve/" in path or path.startswith("/cdn")]


def _logits_against(hub_root: Path, gguf: Path, lora: Path | None = None, merged: bool = True):
    """llama.cpp on ``gguf`` against transformers (+ PEFT merge_and_unload) on the hub's own files."""
    from converters.verify import compare_logits, default_token_ids, hf_logits, llama_logits

    ids = default_token_ids(hub_root / BASE)
    reference = hf_logits(hub_root / BASE, ids, hub_root / MUSE if merged else None)
    return compare_logits(reference, llama_logits(gguf, ids, lora))


def test_get_muse_from_the_command_line_uses_the_published_muse_by_default(real_hub, tmp_path, monkeypatch, capsys):
    from muse_desktop.cli import main
    from muse_desktop.chat.store import Store

    monkeypatch.delenv("MUSE_ADAPTER_REPO", raising=False)
    models = tmp_path / "models"
    with FakeHub(real_hub) as hub:
        code = main(["get-muse", "--endpoint", hub.endpoint, "--models-dir", str(models), "--check-logits"])
        fetched = _fetched(hub)
    out = capsys.readouterr()
    assert code == 0, out.err
    final = models / "muse-phi3-mini-128k-Q4_K_M.gguf"
    assert final.is_file() and not list(models.glob(".*.gguf*"))  # the F16 and unchecked files are gone
    assert any(f"/{MUSE}/resolve/{COMMIT}/adapter_model.safetensors" in p for p in fetched)
    assert not [p for p in fetched if p.endswith(NEVER_FETCHED)], fetched  # no remote code, no pickle
    assert not (real_hub / "training-args-ran").exists()

    entry = next(e for e in Store().library() if e.path == str(final))
    assert entry.name == "MUsE — Phi-3-mini with MUsE built in" and entry.kind == "model"
    info = entry.info
    assert (info["base_repo"], info["base_commit"], info["adapter_repo"], info["adapter_commit"]) == (
        BASE, COMMIT, MUSE, COMMIT)
    assert info["way"] == "merged" and info["quantization"] == "Q4_K_M"
    assert info["sha256"] == hashlib.sha256(final.read_bytes()).hexdigest()
    f16_error = info["verification"]["f16"]["rel_error"]
    assert info["verification"]["passed"] and f16_error < 1e-3
    # The small file was compared with the F16 one, and the person was told.
    quant = info["verification"]["quantized_vs_f16"]
    assert quant["qtype"] == "Q4_K_M" and quant["n_tokens"] > 100 and 0 <= quant["top1_agreement"] <= 1
    assert "Checked the small file: Q4_K_M against F16" in out.out + out.err

    # Independently of the app's own check: the Q4_K_M against PEFT's merge on the hub's files.
    quantized = _logits_against(real_hub, final)
    print(f"\nmerged F16 rel error {f16_error:.2e}; Q4_K_M vs transformers+PEFT: {quantized.summary()}")
    assert quantized.top1_agreement >= 0.5  # a 64-wide random model quantizes badly; this only catches nonsense


def test_get_muse_as_an_add_on_matches_base_plus_adapter(real_hub, tmp_path, monkeypatch):
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings, Sampling
    from muse_desktop.models.getmuse import Built, Way, add_to_library, get_muse
    from muse_desktop.base.prompting.contract import Role, Turn
    from muse_desktop.chat.store import Store

    monkeypatch.delenv("MUSE_ADAPTER_REPO", raising=False)
    seen = {}

    def check(built: Built) -> dict:
        assert built.f16.is_file() and built.quantized.is_file() and built.lora.is_file()
        seen["with"] = _logits_against(real_hub, built.f16, built.lora)
        seen["base"] = _logits_against(real_hub, built.f16, merged=False)
        seen["off"] = _logits_against(real_hub, built.f16, merged=True)  # the base alone vs MUsE
        return {"summary": seen["with"].summary(), "rel_error": seen["with"].rel_error}

    models = tmp_path / "models"
    with FakeHub(real_hub) as hub:
        events = list(get_muse(models, endpoint=hub.endpoint, way=Way.ADDON, check=check))
    done = events[-1]
    assert isinstance(done, Done)
    base, lora = Path(done.path), Path(done.data["adapter_path"])
    assert base.name == "phi3-mini-128k-instruct-Q4_K_M.gguf" and lora.name == "muse-lora-phi3-mini-128k-F16.gguf"
    print(f"\nadd-on: F16 base + MUsE add-on vs PEFT merge: {seen['with'].summary()}; "
          f"F16 base vs transformers base: {seen['base'].summary()}; base vs MUsE: {seen['off'].rel_error:.2e}")
    assert seen["with"].passed(1e-3) and seen["base"].passed(1e-3)
    assert seen["off"].rel_error > 1e-2  # the add-on changes the answers: it was really applied
    assert not list(models.glob(".*.gguf*"))

    store = Store()
    add_to_library(store, done)
    entries = {e.path: e for e in store.library()}
    assert entries[str(lora)].name == "MUsE — Phi-3-mini with the MUsE add-on"
    assert entries[str(lora)].kind == "adapter" and entries[str(lora)].base_path == str(base)
    assert entries[str(lora)].info["way"] == "add-on"
    assert entries[str(lora)].info["adapter_sha256"] == hashlib.sha256(lora.read_bytes()).hexdigest()
    assert entries[str(base)].name == "Phi-3-mini (without MUsE)"

    # In the chat: MUsE on, blended, and off (scale 0 answers exactly as the base alone).
    def answer(engine) -> list[int]:
        done = list(engine.generate("Child", [Turn(Role.USER, "Why is the sky blue?")], None,
                                    Sampling(max_new_tokens=8, temperature=0.0)))[-1]
        assert isinstance(done, Done)
        return done.data["token_ids"]

    settings = EngineSettings(threads=2, context_length=256)
    plain_engine = ChatEngine(str(base), settings)
    try:
        plain = answer(plain_engine)
    finally:
        plain_engine.close()
    engine = ChatEngine(str(base), settings, [AdapterSpec(str(lora), 1.0)])
    try:
        assert answer(engine)
        engine.set_adapters([AdapterSpec(str(lora), 0.5)])
        assert answer(engine)
        engine.set_adapters([AdapterSpec(str(lora), 0.0)])
        assert answer(engine) == plain
    finally:
        engine.close()


def test_the_add_on_reuses_the_base_file_only_if_made_from_the_same_commit(real_hub, tmp_path):
    from muse_desktop.base.events import Log
    from muse_desktop.models.getmuse import Way, get_muse

    models = tmp_path / "models"
    with FakeHub(real_hub) as hub:
        list(get_muse(models, "none", hub.endpoint))  # the base alone first
        base = models / "phi3-mini-128k-instruct-Q4_K_M.gguf"
        made = base.stat().st_mtime_ns
        events = list(get_muse(models, MUSE, hub.endpoint, way=Way.ADDON))
        assert base.stat().st_mtime_ns == made and not any(
            isinstance(e, Log) and e.message.startswith("Converting") for e in events)  # shared, not made again
        # ...and the new add-on was still checked, on the base's F16, before it was kept (found in review).
        addon = json.loads((models / "muse-lora-phi3-mini-128k-F16.gguf.json").read_text())["verification"]
        assert addon["f16"]["rel_error"] < 1e-2 and addon["quantized_vs_f16"]["qtype"] == "Q4_K_M"
        assert not list(models.glob(".*.gguf*"))
        sidecar = models / (base.name + ".json")
        record = json.loads(sidecar.read_text())
        assert record["base_commit"] == COMMIT and record["way"] == "base only"
        sidecar.write_text(json.dumps({**record, "base_commit": "f" * 40}))
        (models / "muse-lora-phi3-mini-128k-F16.gguf").unlink()
        events = list(get_muse(models, MUSE, hub.endpoint, way=Way.ADDON))
    assert any(isinstance(e, Log) and "made from another commit" in e.message for e in events)
    assert json.loads(sidecar.read_text())["base_commit"] == COMMIT


def test_a_failed_check_keeps_nothing_under_a_final_name(real_hub, tmp_path):
    from converters.errors import ConversionError
    from muse_desktop.models.getmuse import Way, get_muse

    def check(built):
        assert built.f16.is_file() and built.quantized.is_file() and built.lora.is_file()
        raise ConversionError("the logits do not match")

    models = tmp_path / "models"
    with FakeHub(real_hub) as hub:
        with pytest.raises(ConversionError, match="do not match"):
            list(get_muse(models, MUSE, hub.endpoint, way=Way.ADDON, check=check))
    assert not list(models.glob("*.gguf*")) and not list(models.glob(".*.gguf*"))
    assert (models / "Phi-3-mini-128k-instruct" / "config.json").is_file()  # the downloads are kept


def _refused(hub_root: Path, tmp_path: Path, capsys, *extra: str) -> tuple[str, list[str]]:
    from muse_desktop.cli import main

    models = tmp_path / "models"
    with FakeHub(hub_root) as hub:
        code = main(["get-muse", "--endpoint", hub.endpoint, "--models-dir", str(models), *extra])
        fetched = _fetched(hub)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert not [p for p in models.rglob("*") if p.is_file()]  # nothing saved, under any name
    assert not [p for p in fetched if p.endswith(".safetensors")]  # refused before any weights came
    lines = [line for line in err.strip().splitlines() if line.startswith("muse-desktop: ")]
    assert len(lines) == 1, err
    return lines[0], fetched


def test_an_adapter_trained_on_another_base_is_refused_by_its_config(hub_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MUSE_ADAPTER_REPO", raising=False)
    path = hub_copy / MUSE / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = "microsoft/Phi-3-mini-4k-instruct"
    path.write_text(json.dumps(config))
    message, _ = _refused(hub_copy, tmp_path, capsys)
    assert "trained on microsoft/Phi-3-mini-4k-instruct, not on microsoft/Phi-3-mini-128k-instruct" in message


def test_an_adapter_that_cannot_be_merged_exactly_is_refused_before_downloading(hub_copy, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.delenv("MUSE_ADAPTER_REPO", raising=False)
    path = hub_copy / MUSE / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "use_dora": True}))
    message, _ = _refused(hub_copy, tmp_path, capsys)
    assert "Cannot merge 'seohyunqkr/MUsE' exactly" in message and "DoRA" in message  # converters.lora's own rule and words


def test_the_base_name_is_compared_ignoring_case_and_a_local_path_only_warns(hub_copy, tmp_path, monkeypatch):
    from muse_desktop.models.getmuse import plan_muse

    path = hub_copy / MUSE / "adapter_config.json"
    config = json.loads(path.read_text())
    with FakeHub(hub_copy) as hub:
        config["base_model_name_or_path"] = BASE.upper()
        path.write_text(json.dumps(config))
        assert plan_muse(tmp_path / "m", MUSE, hub.endpoint).warnings == []
        config["base_model_name_or_path"] = "/home/someone/Phi-3-mini-128k-instruct"
        path.write_text(json.dumps(config))
        warnings = plan_muse(tmp_path / "m", MUSE, hub.endpoint).warnings
    assert len(warnings) == 1 and "/home/someone/Phi-3-mini-128k-instruct" in warnings[0]


@pytest.mark.parametrize("change, named", [
    ("added", "added tokens differ (id 3 is '<|pad|>'"),
    ("pad", "pad token is '<unk>', the base's is '<|endoftext|>'"),
])
def test_an_adapter_whose_tokenizer_differs_is_refused_naming_the_difference(hub_copy, tmp_path, monkeypatch,
                                                                             capsys, change, named):
    monkeypatch.delenv("MUSE_ADAPTER_REPO", raising=False)
    folder = hub_copy / MUSE
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if change == "added":  # a token the fine-tune added over a vocabulary piece: other ids for the same text
        tokenizer["added_tokens"].append({"id": 3, "content": "<|pad|>", "single_word": False, "lstrip": False,
                                          "rstrip": False, "normalized": False, "special": True})
        config.setdefault("added_tokens_decoder", {})["3"] = {"content": "<|pad|>", "special": True}
    else:
        config["pad_token"] = "<unk>"
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    message, _ = _refused(hub_copy, tmp_path, capsys)
    assert "tokenizer that differs" in message and named in message, message


def test_an_adapter_published_only_as_a_pickle_is_refused_and_never_fetched(hub_copy, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.delenv("MUSE_ADAPTER_REPO", raising=False)
    folder = hub_copy / MUSE
    (folder / "adapter_model.safetensors").unlink()
    marker = tmp_path / "pickle-ran"
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(RunsCode(marker)))
    message, fetched = _refused(hub_copy, tmp_path, capsys)
    assert "only as adapter_model.bin, a format that can run code" in message
    assert not [p for p in fetched if p.endswith(".bin")] and not marker.exists()


def test_an_explicit_none_sets_up_the_base_alone(real_hub, tmp_path, monkeypatch):
    from muse_desktop.models.getmuse import get_muse

    monkeypatch.setenv("MUSE_ADAPTER_REPO", "none")
    with FakeHub(real_hub) as hub:
        events = list(get_muse(tmp_path / "models", endpoint=hub.endpoint))
        fetched = _fetched(hub)
    assert Path(events[-1].path).name == "phi3-mini-128k-instruct-Q4_K_M.gguf"
    assert events[-1].data["provenance"]["way"] == "base only"
    assert not [p for p in fetched if MUSE in p]


def test_base_revision_pins_the_base(real_hub, tmp_path):
    from muse_desktop.models.getmuse import plan_muse

    with FakeHub(real_hub) as hub:
        plan_muse(tmp_path / "m", MUSE, hub.endpoint, base_revision=COMMIT)
        asked = [p for p, _ in hub.requests if p.startswith("/api/models/microsoft")]
    assert asked == [f"/api/models/{BASE}/revision/{COMMIT}?blobs=true"]


def test_the_plan_sizes_both_ways_before_anything_is_downloaded(real_hub, tmp_path):
    from muse_desktop.models.getmuse import Way, plan_muse

    with FakeHub(real_hub) as hub:
        plan = plan_muse(tmp_path / "models", "", hub.endpoint)
        fetched = _fetched(hub)
    weights = sum(p.stat().st_size for p in (real_hub / BASE).glob("*.safetensors"))
    adapter = (real_hub / MUSE / "adapter_model.safetensors").stat().st_size
    assert plan.download[Way.MERGED] == plan.download[Way.ADDON] >= weights + adapter
    assert plan.result[Way.ADDON] > plan.result[Way.MERGED]
    assert not [p for p in fetched if p.endswith(".safetensors")]


def test_malformed_tokenizer_files_get_a_plain_refusal():
    """Found in review: an added token without an id escaped as a bare KeyError: 'id'."""
    from muse_desktop.models.tokenizer_check import TokenizerMismatch, check_same_tokenizer

    good = {"tokenizer.json": json.dumps({"model": {"vocab": {"a": 0}}, "added_tokens": []}).encode()}
    bad = {"tokenizer.json": json.dumps({"model": {"vocab": {"a": 0}}, "added_tokens": [{"content": "x"}]}).encode()}
    with pytest.raises(TokenizerMismatch, match="not laid out as tokenizers are"):
        check_same_tokenizer(good, bad, "'seohyunqkr/MUsE'", "the base")
    check_same_tokenizer(good, good, "'seohyunqkr/MUsE'", "the base")
