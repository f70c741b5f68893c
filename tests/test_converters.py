"""converters/: every output checked by numbers against transformers, and every failure by its message."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

from converters.convert import convert_adapter, convert_model, merge_to_safetensors
from converters.errors import ConversionError
from converters.gguf_check import inspect_gguf
from converters.quantize import quantize
from converters.verify import compare_logits, default_token_ids, hf_logits, llama_logits, verify
from muse_desktop.models.demo_model import Variant
from muse_desktop.base.events import CancelToken, Cancelled, Done, Progress
from muse_desktop.base.fileio import TEMP_MARK
from muse_desktop.base.prompting import Special, Turn, build_pieces, encode, prompt_text
from muse_desktop.base.prompting.hf import HFTokenizer
from muse_desktop.base.prompting.llama import LlamaCppTokenizer

from helpers import REPO, make_peft_adapter


def run(events):
    last = None
    for event in events:
        last = event
    assert isinstance(last, Done)
    return last


def reader(path):
    return gguf.GGUFReader(path, "r")


def field(r, key):
    return r.get_field(key).contents()


# --- conversion, by logits -------------------------------------------------------------


@pytest.mark.parametrize("variant", Variant.ALL)
def test_f32_gguf_matches_transformers(tiny_models, tiny_gguf, variant):
    report = verify(tiny_models[variant], tiny_gguf[variant])
    assert report.n_tokens > 100
    assert report.rel_error < 1e-3 and report.top1_agreement == 1.0, report.summary()


def test_long_rope_variant_compared_within_its_original_context(tiny_models, tiny_gguf):
    config = json.loads((tiny_models[Variant.MINI_128K] / "config.json").read_text())
    ids = default_token_ids(tiny_models[Variant.MINI_128K])
    assert len(ids) <= config["original_max_position_embeddings"]
    hf = hf_logits(tiny_models[Variant.MINI_128K], ids)
    ours = llama_logits(tiny_gguf[Variant.MINI_128K], ids, n_ctx=config["original_max_position_embeddings"])
    assert compare_logits(hf, ours).rel_error < 1e-3
    # The factors matter: the 4k model with the same weights would give other logits.
    assert compare_logits(hf, llama_logits(tiny_gguf[Variant.MINI_4K], ids)).rel_error > 1e-2


def test_f16_within_1e_2_and_q8_0_close(tiny_model, tmp_path):
    run(convert_model(tiny_model, tmp_path / "f16.gguf", "f16"))
    assert verify(tiny_model, tmp_path / "f16.gguf").rel_error < 1e-2
    run(convert_model(tiny_model, tmp_path / "q8.gguf", "q8_0"))
    assert verify(tiny_model, tmp_path / "q8.gguf").rel_error < 5e-2
    run(convert_model(tiny_model, tmp_path / "bf16.gguf", "bf16"))
    assert verify(tiny_model, tmp_path / "bf16.gguf").rel_error < 2e-2
    types = {t.name: t.tensor_type for t in reader(tmp_path / "q8.gguf").tensors}
    assert types["blk.0.attn_qkv.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_metadata_as_llama_cpp_expects(tiny_models, tiny_gguf):
    config = json.loads((tiny_models[Variant.MINI_128K] / "config.json").read_text())
    r = reader(tiny_gguf[Variant.MINI_128K])
    assert field(r, "general.architecture") == "phi3"
    assert "phi-3" in field(r, "general.name").lower()  # llama.cpp's rstrip rule depends on it
    assert field(r, "phi3.context_length") == config["max_position_embeddings"]
    assert field(r, "phi3.rope.scaling.original_context_length") == config["original_max_position_embeddings"]
    assert field(r, "phi3.rope.dimension_count") == config["hidden_size"] // config["num_attention_heads"]
    assert field(r, "phi3.attention.head_count_kv") == config["num_key_value_heads"]
    scale = config["max_position_embeddings"] / config["original_max_position_embeddings"]
    expected = math.sqrt(1 + math.log(scale) / math.log(config["original_max_position_embeddings"]))
    assert field(r, "phi3.rope.scaling.attn_factor") == pytest.approx(expected, rel=1e-6)
    tensors = {t.name: t for t in r.tensors}
    np.testing.assert_array_equal(tensors["rope_factors_long.weight"].data, np.float32(config["rope_scaling"]["long_factor"]))
    np.testing.assert_array_equal(tensors["rope_factors_short.weight"].data, np.float32(config["rope_scaling"]["short_factor"]))
    assert len(field(r, "tokenizer.ggml.tokens")) == config["vocab_size"]
    assert field(r, "tokenizer.ggml.model") == "llama"
    assert "<|assistant|>" in field(r, "tokenizer.chat_template")
    assert field(r, "tokenizer.ggml.eos_token_id") == config["eos_token_id"]
    gqa = reader(tiny_gguf[Variant.GQA])
    assert field(gqa, "phi3.attention.head_count_kv") < field(gqa, "phi3.attention.head_count")
    assert "rope_factors_long.weight" not in {t.name for t in reader(tiny_gguf[Variant.MINI_4K]).tensors}


# --- token ids ---------------------------------------------------------------------------


def test_llama_cpp_tokenizes_like_transformers_and_the_contract(tiny_model, tiny_gguf, hf_tokenizer):
    from llama_cpp import Llama

    llm = Llama(str(tiny_gguf[Variant.MINI_4K]), n_ctx=256, verbose=False, vocab_only=True)
    for token in (*Special.PHI3_ADDED, Special.BOS, Special.EOS):
        assert llm.tokenize(token.encode(), add_bos=False, special=True) == [hf_tokenizer.convert_tokens_to_ids(token)]
    conversations = [
        [Turn("user", "Why is a balanced diet important?")],
        [Turn("user", "Hi!"), Turn("assistant", "Hello, café 😀 friend."), Turn("user", "  And water?\n")],
    ]
    for turns in conversations:
        text = prompt_text("Elderly", turns)
        training_ids = encode(build_pieces("Elderly", turns), HFTokenizer(hf_tokenizer)).input_ids
        chat_ids = encode(build_pieces("Elderly", turns), LlamaCppTokenizer(llm)).input_ids
        assert chat_ids == training_ids  # what the chat engine feeds == what the trainer trained on
        # With general.name containing "Phi-3", llama.cpp's own text tokenization agrees too.
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == training_ids
    llm.close()


# --- merge and adapters ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["all", "rslora", "patterns", "layer1"])
def test_one_pass_merge_matches_peft_merge_and_unload(tiny_model, adapters, tmp_path, kind):
    out = tmp_path / "merged.gguf"
    run(convert_model(tiny_model, out, "f32", adapter_dir=adapters[kind]))
    ids = default_token_ids(tiny_model)
    merged_hf = hf_logits(tiny_model, ids, adapters[kind])
    report = compare_logits(merged_hf, llama_logits(out, ids))
    assert report.rel_error < 1e-3 and report.top1_agreement == 1.0, report.summary()
    # ...and the adapter really changes the model (a merge that ignored it would fail here).
    assert compare_logits(merged_hf, hf_logits(tiny_model, ids)).rel_error > 1e-2


@pytest.mark.parametrize("kind", ["all", "rslora", "patterns"])
def test_gguf_lora_on_base_matches_merged_model(tiny_model, tiny_gguf, adapters, tmp_path, kind):
    lora = tmp_path / "adapter.gguf"
    run(convert_adapter(adapters[kind], lora, tiny_model))
    r = reader(lora)
    assert field(r, "general.type") == "adapter" and field(r, "adapter.type") == "lora"
    assert field(r, "general.architecture") == "phi3"
    names = {t.name for t in r.tensors}
    assert "blk.0.attn_qkv.weight.lora_a" in names and "blk.1.ffn_down.weight.lora_b" in names
    assert lora.stat().st_size < tiny_gguf[Variant.MINI_4K].stat().st_size / 2
    ids = default_token_ids(tiny_model)
    report = compare_logits(hf_logits(tiny_model, ids, adapters[kind]), llama_logits(tiny_gguf[Variant.MINI_4K], ids, lora_path=lora))
    assert report.rel_error < 2e-3 and report.top1_agreement == 1.0, report.summary()


def test_merged_safetensors_checkpoint_equals_peft(tiny_model, adapters, tmp_path):
    from peft import PeftModel

    out = tmp_path / "merged-hf"
    run(merge_to_safetensors(tiny_model, adapters["patterns"], out))
    ours = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    theirs = PeftModel.from_pretrained(base, str(adapters["patterns"])).merge_and_unload().state_dict()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert (out / "tokenizer.model").exists() and (out / "config.json").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["embed_tokens"]}, "embeddings"),
    ],
)
def test_inexact_adapters_are_refused_with_the_reason(tiny_model, tmp_path, options, message):
    adapter = make_peft_adapter(tiny_model, tmp_path / "adapter", **options)
    with pytest.raises(ConversionError, match=message):
        run(convert_model(tiny_model, tmp_path / "out.gguf", "f32", adapter_dir=adapter))
    assert not (tmp_path / "out.gguf").exists()


def test_adapter_for_another_base_is_refused(tiny_models, tmp_path):
    adapter = make_peft_adapter(tiny_models[Variant.GQA], tmp_path / "gqa-adapter")
    with pytest.raises(ConversionError, match="different model"):
        run(convert_adapter(adapter, tmp_path / "a.gguf", tiny_models[Variant.MINI_4K]))
    with pytest.raises(ConversionError, match="different model"):
        run(convert_model(tiny_models[Variant.MINI_4K], tmp_path / "m.gguf", adapter_dir=adapter))


def test_pickled_adapter_is_refused(tiny_model, adapters, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(adapters["all"] / "adapter_config.json", folder)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ConversionError, match="never unpickles"):
        run(convert_adapter(folder, tmp_path / "a.gguf", tiny_model))


# --- quantization ------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q8_0"])
def test_quantized_models_load_and_generate(tiny_gguf, tmp_path, qtype):
    from muse_desktop.base.llamacpp import open_llama

    out = tmp_path / f"{qtype}.gguf"
    events = list(quantize(tiny_gguf[Variant.MINI_4K], out, qtype, threads=2))
    assert any(isinstance(e, Progress) and e.done == e.total for e in events)
    assert out.stat().st_size < tiny_gguf[Variant.MINI_4K].stat().st_size / 2
    assert not list(tmp_path.glob(f"*{TEMP_MARK}*"))
    llm = open_llama(model_path=str(out), n_ctx=128, verbose=False)  # as the app opens models
    result = llm.create_completion("<|user|>Hello<|end|>", max_tokens=8, temperature=0.0)
    assert result["usage"]["completion_tokens"] >= 1
    llm.close()


def test_quantize_refuses_a_damaged_input(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ConversionError, match="not a GGUF"):
        list(quantize(bad, tmp_path / "out.gguf"))
    with pytest.raises(ConversionError, match="Unknown quantization type 'Q3_XS'"):
        list(quantize(bad, tmp_path / "out.gguf", "Q3_XS"))


# --- bad input, kills, cancel, disk ------------------------------------------------------


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_shard_names_the_file(tiny_model, tmp_path):
    model = copy_model(tiny_model, tmp_path / "m")
    shard = model / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ConversionError, match="model-00002-of-00002.safetensors is truncated: tensor '.*'"):
        run(convert_model(model, tmp_path / "out.gguf"))
    assert os.listdir(tmp_path) == ["m"]


def test_missing_shard_and_lying_index(tiny_model, tmp_path):
    model = copy_model(tiny_model, tmp_path / "m")
    (model / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="shard missing: model-00001-of-00002.safetensors"):
        run(convert_model(model, tmp_path / "out.gguf"))
    model = copy_model(tiny_model, tmp_path / "m2")
    index = json.loads((model / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.mlp.down_proj.weight"] = "model-00002-of-00002.safetensors"
    index["weight_map"]["model.layers.0.mlp.down_proj.weight"] = (
        "model-00002-of-00002.safetensors"
        if "model.layers.0.mlp.down_proj.weight" not in load_file(model / "model-00002-of-00002.safetensors")
        else "model-00001-of-00002.safetensors"
    )
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConversionError, match="says tensor 'model.layers.0.mlp.down_proj.weight' is in"):
        run(convert_model(model, tmp_path / "out.gguf"))


def test_shape_mismatch_and_unsupported_architecture(tiny_model, tmp_path):
    model = copy_model(tiny_model, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["intermediate_size"] = 96
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="gate_up_proj.weight' has shape \\[256, 64\\] but config.json implies \\[192, 64\\]"):
        run(convert_model(model, tmp_path / "out.gguf"))
    config["architectures"] = ["LlamaForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="LlamaForCausalLM is not supported. Supported: Phi3ForCausalLM"):
        run(convert_model(model, tmp_path / "out.gguf"))


def test_nan_weights_are_reported_with_file_and_tensor(tiny_model, tmp_path):
    from safetensors.numpy import save_file

    model = copy_model(tiny_model, tmp_path / "m")
    shard = model / "model-00001-of-00002.safetensors"
    weights = load_file(shard)
    name = next(n for n in weights if n.endswith("o_proj.weight"))
    weights[name][3, 5] = np.nan
    save_file(weights, shard, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=f"model-00001-of-00002.safetensors: tensor '{name}' contains NaN"):
        run(convert_model(model, tmp_path / "out.gguf"))
    assert not (tmp_path / "out.gguf").exists()
    assert not list(tmp_path.glob(f".out.gguf{TEMP_MARK}*"))


def test_values_beyond_f16_are_reported_not_written_as_inf(tiny_model, tmp_path):
    from safetensors.numpy import save_file

    model = copy_model(tiny_model, tmp_path / "m")
    shard = model / "model-00002-of-00002.safetensors"
    weights = load_file(shard)
    name = next(n for n in weights if n.endswith("down_proj.weight"))
    weights[name][0, 0] = 1e6
    save_file(weights, shard, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=f"tensor '{name}' has values too large for f16"):
        run(convert_model(model, tmp_path / "out.gguf", "f16"))
    run(convert_model(model, tmp_path / "out.gguf", "f32"))  # f32 holds them


def test_cancel_stops_between_tensors_and_leaves_nothing(tiny_model, tmp_path):
    token = CancelToken()
    out = tmp_path / "out.gguf"
    seen = 0
    with pytest.raises(Cancelled):
        for event in convert_model(tiny_model, out, "f32", cancel=token):
            if isinstance(event, Progress):
                seen += 1
                token.cancel()
    assert seen == 1 and os.listdir(tmp_path) == []


def test_not_enough_disk_space_is_said_before_writing(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ConversionError, match="Not enough free disk space"):
        run(convert_model(tiny_model, tmp_path / "out.gguf"))
    assert os.listdir(tmp_path) == []


KILL_SCRIPT = """
import sys, time
import converters.gguf_out as out
original = out.encode_into
count = 0
def slow(*args):
    global count
    count += 1
    if count == 4:
        print("MIDWAY", flush=True)
        time.sleep(60)
    return original(*args)
out.encode_into = slow
from converters.convert import convert_model
for _ in convert_model(sys.argv[1], sys.argv[2], "f32"):
    pass
"""


def test_killing_a_conversion_midway_leaves_no_output_file(tiny_model, tmp_path):
    out = tmp_path / "out.gguf"
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tiny_model), str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert process.stdout.readline().strip() == "MIDWAY"
    partial = list(tmp_path.glob(f".out.gguf{TEMP_MARK}*"))
    assert partial and partial[0].stat().st_size > 0  # it really was writing
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    # The next conversion clears the leftover and writes the real file.
    run(convert_model(tiny_model, out, "f32"))
    assert out.exists() and not list(tmp_path.glob(f".out.gguf{TEMP_MARK}*"))


# --- checking GGUF files -----------------------------------------------------------------


def test_inspect_gguf_messages(tiny_gguf, tmp_path, adapters, tiny_model):
    info = inspect_gguf(tiny_gguf[Variant.MINI_4K])
    assert info.architecture == "phi3" and info.kind == "model" and info.n_tensors == 15
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf[Variant.MINI_4K].read_bytes()[:-5000])
    with pytest.raises(ConversionError, match="truncated"):
        inspect_gguf(truncated)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(tiny_gguf[Variant.MINI_4K].read_bytes()[:2000])
    with pytest.raises(ConversionError, match="damaged or truncated|truncated"):
        inspect_gguf(header_only)
    with pytest.raises(ConversionError, match="safetensors checkpoint: convert it first"):
        inspect_gguf(next(tiny_model.glob("*.safetensors")))
    lora = tmp_path / "lora.gguf"
    run(convert_adapter(adapters["all"], lora, tiny_model))
    with pytest.raises(ConversionError, match="is a GGUF adapter, but a model was expected"):
        inspect_gguf(lora)
    assert inspect_gguf(lora, expect="adapter").kind == "adapter"
    foreign = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(foreign, "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConversionError, match="'llama' model"):
        inspect_gguf(foreign)
