"""Every form of Phi-3 checkpoint in circulation converts exactly, or is refused by name.

The matrix: the three tiny shapes (4k, 128k LongRoPE, GQA), each in the form
transformers 4.x and Microsoft's checkpoints use (``rope_scaling``, ``rope_theta`` at
the top) and as the installed transformers' own ``save_pretrained`` writes it
(``rope_parameters``, no ``rope_scaling``), plus adapters saved by the installed PEFT.
Each cell is compared by logits with transformers itself.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from converters.convert import convert_adapter, convert_model
from converters.errors import ConversionError
from converters.lora import LoraAdapter
from converters.phi3 import read_config
from converters.reference import streamed_logits
from converters.verify import compare_logits, default_token_ids, hf_logits, llama_logits, verify
from muse_desktop.models.demo_model import Variant
from muse_desktop.base.events import Done, Log
from muse_desktop.base.prompting import Turn, build_pieces, encode, prompt_text
from muse_desktop.base.prompting.hf import HFTokenizer

from helpers import make_peft_adapter

FORMS = ("transformers-4", "saved-now")
TOKENIZER_MODEL = "tokenizer.model"


def run(events):
    *_, last = list(events)
    assert isinstance(last, Done)
    return last


def save_with_installed_transformers(source, out):
    """What a user's merged or fine-tuned checkpoint looks like today: model and tokenizer saved by transformers."""
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(out))
    # transformers 5 no longer writes the sentencepiece model; the GGUF vocabulary needs it.
    shutil.copyfile(source / TOKENIZER_MODEL, out / TOKENIZER_MODEL)
    return out


@pytest.fixture(scope="session")
def matrix(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("matrix")
    cells = {}
    for variant, path in tiny_models.items():
        cells[(variant, "transformers-4")] = path
        cells[(variant, "saved-now")] = save_with_installed_transformers(path, root / variant)
    return cells


def n_ctx_for(model_dir):
    """Within a LongRoPE model's original context, where llama.cpp and transformers both use the short factors."""
    raw = json.loads((model_dir / "config.json").read_text())
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    return raw["original_max_position_embeddings"] if rope.get("long_factor") else None


def test_saved_now_really_is_the_new_form(matrix):
    """Guards the matrix itself: if transformers changed its output again, this says so."""
    raw = json.loads((matrix[(Variant.MINI_128K, "saved-now")] / "config.json").read_text())
    assert raw.get("rope_scaling") is None and raw["rope_parameters"]["rope_type"] == "longrope"
    assert "rope_theta" not in raw and "long_factor" in raw["rope_parameters"]
    old = json.loads((matrix[(Variant.MINI_128K, "transformers-4")] / "config.json").read_text())
    assert old["rope_scaling"]["type"] == "longrope" and "rope_parameters" not in old


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("variant", Variant.ALL)
def test_every_cell_converts_to_transformers_logits(matrix, tmp_path, variant, form):
    model_dir = matrix[(variant, form)]
    out = tmp_path / "model.gguf"
    run(convert_model(model_dir, out, "f32"))
    ids = default_token_ids(model_dir)
    report = compare_logits(hf_logits(model_dir, ids), llama_logits(out, ids, n_ctx=n_ctx_for(model_dir)))
    assert report.rel_error < 1e-3 and report.top1_agreement == 1.0, f"{variant}/{form}: {report.summary()}"


def test_both_forms_give_the_same_gguf_tensors(matrix, tmp_path):
    import gguf

    files = {}
    for form in FORMS:
        files[form] = tmp_path / f"{form}.gguf"
        run(convert_model(matrix[(Variant.MINI_128K, form)], files[form], "f32"))
    old, new = (gguf.GGUFReader(files[form], "r") for form in FORMS)
    assert [t.name for t in old.tensors] == [t.name for t in new.tensors]
    assert "rope_factors_long.weight" in {t.name for t in new.tensors}
    for a, b in zip(old.tensors, new.tensors, strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=a.name)
    for key in ("phi3.rope.scaling.attn_factor", "phi3.rope.freq_base", "phi3.rope.scaling.original_context_length"):
        assert old.get_field(key).contents() == new.get_field(key).contents(), key


def test_saved_now_tokenizes_in_llama_cpp_as_in_transformers(matrix, tmp_path):
    """transformers 5 keeps add_bos in tokenizer.json and the template in chat_template.jinja."""
    from llama_cpp import Llama

    model_dir = matrix[(Variant.MINI_4K, "saved-now")]
    out = tmp_path / "model.gguf"
    run(convert_model(model_dir, out, "f32"))
    hf = AutoTokenizer.from_pretrained(str(model_dir))
    llm = Llama(str(out), n_ctx=256, verbose=False, vocab_only=True)
    try:
        turns = [Turn("user", "Hi!"), Turn("assistant", "Hello, café friend."), Turn("user", "And water?")]
        expected = encode(build_pieces("Elderly", turns), HFTokenizer(hf)).input_ids
        assert llm.tokenize(prompt_text("Elderly", turns).encode(), add_bos=True, special=True) == expected
        assert "<|assistant|>" in llm.metadata.get("tokenizer.chat_template", "")
    finally:
        llm.close()


@pytest.mark.parametrize("variant", [Variant.MINI_128K, Variant.GQA])
def test_adapters_saved_by_installed_peft_on_the_new_form(matrix, tmp_path, variant):
    base = matrix[(variant, "saved-now")]
    adapter = make_peft_adapter(base, tmp_path / "adapter", seed=5, r=4, lora_alpha=8)
    ids = default_token_ids(base)
    expected = hf_logits(base, ids, adapter)  # PEFT's merge_and_unload
    n_ctx = n_ctx_for(base)
    merged = tmp_path / "merged.gguf"
    run(convert_model(base, merged, "f32", adapter_dir=adapter))
    report = compare_logits(expected, llama_logits(merged, ids, n_ctx=n_ctx))
    assert report.rel_error < 1e-3 and report.top1_agreement == 1.0, report.summary()
    base_gguf, lora = tmp_path / "base.gguf", tmp_path / "lora.gguf"
    run(convert_model(base, base_gguf, "f32"))
    run(convert_adapter(adapter, lora, base))
    report = compare_logits(expected, llama_logits(base_gguf, ids, lora_path=lora, n_ctx=n_ctx))
    assert report.rel_error < 2e-3 and report.top1_agreement == 1.0, report.summary()


# --- the streamed reference the checks use ------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("variant", Variant.ALL)
def test_streamed_reference_equals_whole_model_transformers(matrix, adapters, variant, form):
    model_dir = matrix[(variant, form)]
    ids = default_token_ids(model_dir)
    whole = hf_logits(model_dir, ids)
    assert np.abs(streamed_logits(model_dir, ids) - whole).max() / np.abs(whole).max() < 1e-5


@pytest.mark.parametrize("kind", ["all", "rslora", "patterns", "layer1"])
def test_streamed_reference_applies_adapters_as_peft_merges_them(tiny_model, adapters, kind):
    ids = default_token_ids(tiny_model)
    merged = hf_logits(tiny_model, ids, adapters[kind])
    streamed = streamed_logits(tiny_model, ids, adapters[kind])
    assert np.abs(streamed - merged).max() / np.abs(merged).max() < 1e-4
    # ...and the adapter is really in it.
    assert compare_logits(merged, hf_logits(tiny_model, ids)).rel_error > 1e-2


def test_verify_uses_one_rule_and_catches_missing_rope_factors(matrix, tmp_path):
    """A LongRoPE model converted without its factors (the old defect) fails the check."""
    import gguf

    model_dir = matrix[(Variant.MINI_128K, "saved-now")]
    good = tmp_path / "good.gguf"
    run(convert_model(model_dir, good, "f16"))
    report = verify(model_dir, good)
    assert report.tolerance == 1e-2 and report.passed(), report.summary()
    # The same weights as a plain-RoPE GGUF: what the converter wrote before it read rope_parameters.
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain)
    raw = json.loads((plain / "config.json").read_text())
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    (plain / "config.json").write_text(json.dumps(raw))
    bad = tmp_path / "bad.gguf"
    run(convert_model(plain, bad, "f16"))
    assert "rope_factors_long.weight" not in {t.name for t in gguf.GGUFReader(bad, "r").tensors}
    report = verify(model_dir, bad)
    assert not report.passed(), report.summary()


# --- refusals, each naming its key ----------------------------------------------------------


def edited_copy(source, tmp_path, edit):
    target = tmp_path / "edited"
    shutil.copytree(source, target)
    raw = json.loads((target / "config.json").read_text())
    edit(raw)
    (target / "config.json").write_text(json.dumps(raw))
    return target


def _set(path, value):
    def edit(raw):
        *parents, leaf = path.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return edit


@pytest.mark.parametrize(
    "edit, key",
    [
        (_set("rope_parameters.rope_type", "yarn"), "rope_parameters.rope_type"),
        (_set("rope_parameters.rope_type", "dynamic"), "rope_parameters.rope_type"),
        (_set("rope_parameters.partial_rotary_factor", 0.5), "partial_rotary_factor"),
        (_set("partial_rotary_factor", 0.75), "partial_rotary_factor"),
        (_set("attention_bias", True), "attention_bias"),
        (_set("mlp_bias", True), "mlp_bias"),
        (_set("hidden_act", "gelu"), "hidden_act"),
        (_set("head_dim", 8), "head_dim"),
        (_set("quantization_config", {"quant_method": "bitsandbytes"}), "quantization_config"),
        (_set("rope_theta", 500000.0), "rope_theta"),
        (_set("rope_parameters.factor", 4.0), "rope_parameters.factor"),
        (_set("rope_parameters.beta_fast", 32), "rope_parameters.beta_fast"),
        (_set("rope_scaling", {"type": "longrope", "long_factor": [1.0] * 8, "short_factor": [1.0] * 8}), "long_factor"),
    ],
)
def test_math_changing_config_keys_are_refused_by_name(matrix, tmp_path, edit, key):
    source = matrix[(Variant.MINI_128K, "saved-now")]
    with pytest.raises(ConversionError) as info:
        read_config(edited_copy(source, tmp_path, edit))
    message = str(info.value)
    assert key in message and "\n" not in message, message


def test_rope_theta_in_either_place_is_used(matrix, tmp_path):
    source = matrix[(Variant.MINI_4K, "saved-now")]
    new_form = edited_copy(source, tmp_path / "a", _set("rope_parameters.rope_theta", 250000.0))
    assert read_config(new_form).rope_theta == 250000.0
    old = matrix[(Variant.MINI_4K, "transformers-4")]
    old_form = edited_copy(old, tmp_path / "b", _set("rope_theta", 250000.0))
    assert read_config(old_form).rope_theta == 250000.0


def test_a_bias_tensor_in_the_checkpoint_is_refused(tiny_model, tmp_path):
    from safetensors.numpy import load_file, save_file

    target = tmp_path / "with-bias"
    shutil.copytree(tiny_model, target)
    index = json.loads((target / "model.safetensors.index.json").read_text())
    shard = target / index["weight_map"]["model.layers.0.self_attn.qkv_proj.weight"]
    tensors = load_file(str(shard))
    tensors["model.layers.0.self_attn.qkv_proj.bias"] = np.ones(tensors["model.layers.0.self_attn.qkv_proj.weight"].shape[0], np.float32)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index["weight_map"]["model.layers.0.self_attn.qkv_proj.bias"] = shard.name
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConversionError, match="qkv_proj.bias"):
        run(convert_model(target, tmp_path / "out.gguf", "f32"))
    assert not (tmp_path / "out.gguf").exists()


def test_unknown_config_keys_are_reported_not_ignored(tiny_model, tmp_path):
    source = edited_copy(tiny_model, tmp_path, _set("some_future_setting", 3))
    events = list(convert_model(source, tmp_path / "out.gguf", "f32"))
    warnings = [e.message for e in events if isinstance(e, Log) and e.level == "warning"]
    assert any("some_future_setting" in w for w in warnings), warnings


def test_missing_sentencepiece_model_says_where_to_get_it(matrix, tmp_path):
    target = tmp_path / "no-spm"
    shutil.copytree(matrix[(Variant.MINI_4K, "saved-now")], target)
    (target / TOKENIZER_MODEL).unlink()
    with pytest.raises(ConversionError, match="tokenizer.model") as info:
        run(convert_model(target, tmp_path / "out.gguf", "f32"))
    assert "base model" in str(info.value)


def adapter_with(tiny_model, tmp_path, **config_changes):
    adapter = tmp_path / "adapter"
    if not adapter.exists():
        make_peft_adapter(tiny_model, adapter, r=4, lora_alpha=8)
    raw = json.loads((adapter / "adapter_config.json").read_text())
    raw.update(config_changes)
    (adapter / "adapter_config.json").write_text(json.dumps(raw))
    return adapter


@pytest.mark.parametrize(
    "change, key",
    [
        ({"use_dora": True}, "use_dora"),
        ({"lora_bias": True}, "lora_bias"),
        ({"layer_replication": [[0, 2]]}, "layer_replication"),
        ({"trainable_token_indices": [1, 2]}, "trainable_token_indices"),
        ({"alora_invocation_tokens": [5, 6]}, "alora_invocation_tokens"),
        ({"target_parameters": ["mlp.experts"]}, "target_parameters"),
        ({"use_qalora": True}, "use_qalora"),
        ({"arrow_config": {"top_k": 2}}, "arrow_config"),
        ({"bias": "all"}, "bias"),
        ({"init_lora_weights": "pissa_niter_4"}, "init_lora_weights"),
        ({"init_lora_weights": "loftq"}, "init_lora_weights"),
        ({"init_lora_weights": "olora"}, "init_lora_weights"),
    ],
)
def test_math_changing_adapter_settings_are_refused_by_name(tiny_model, tmp_path, change, key):
    adapter = adapter_with(tiny_model, tmp_path, **change)
    with pytest.raises(ConversionError) as info:
        LoraAdapter(adapter, read_config(tiny_model))
    assert f"'{key}'" in str(info.value), str(info.value)


def test_harmless_adapter_fields_from_any_peft_version_are_accepted(tiny_model, tmp_path):
    adapter = adapter_with(tiny_model, tmp_path, init_lora_weights="eva", some_future_field={"x": 1},
                           velora_config=None, peft_version="9.9.9", exclude_modules=None)
    assert len(LoraAdapter(adapter, read_config(tiny_model)).modules) > 0


def tied_copy(tiny_model, tmp_path, keep_lm_head: bool):
    from safetensors.numpy import load_file, save_file

    target = tmp_path / "tied"
    shutil.copytree(tiny_model, target)
    edit = json.loads((target / "config.json").read_text())
    edit["tie_word_embeddings"] = True
    (target / "config.json").write_text(json.dumps(edit))
    index = json.loads((target / "model.safetensors.index.json").read_text())
    if not keep_lm_head:
        shard = target / index["weight_map"].pop("lm_head.weight")
        tensors = load_file(str(shard))
        del tensors["lm_head.weight"]
        save_file(tensors, str(shard), metadata={"format": "pt"})
        (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return target


def test_tied_embeddings_become_the_output_layer(tiny_model, tmp_path):
    model_dir = tied_copy(tiny_model, tmp_path, keep_lm_head=False)
    out = tmp_path / "tied.gguf"
    run(convert_model(model_dir, out, "f32"))
    ids = default_token_ids(model_dir)
    report = compare_logits(hf_logits(model_dir, ids), llama_logits(out, ids))
    assert report.rel_error < 1e-3 and report.top1_agreement == 1.0, report.summary()
    assert np.abs(streamed_logits(model_dir, ids) - hf_logits(model_dir, ids)).max() < 1e-3


def test_tied_config_with_a_different_stored_head_is_refused(tiny_model, tmp_path):
    model_dir = tied_copy(tiny_model, tmp_path, keep_lm_head=True)
    with pytest.raises(ConversionError, match="tie_word_embeddings"):
        run(convert_model(model_dir, tmp_path / "out.gguf", "f32"))
    assert not (tmp_path / "out.gguf").exists()


# --- the configs Microsoft publishes, read as they are -------------------------------------------

_COMMON = {
    "architectures": ["Phi3ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "embd_pdrop": 0.0,
    "eos_token_id": 32000, "hidden_act": "silu", "initializer_range": 0.02, "model_type": "phi3",
    "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": True,
    "vocab_size": 32064, "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                                      "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
}
_MINI = {"hidden_size": 3072, "intermediate_size": 8192, "num_attention_heads": 32, "num_hidden_layers": 32,
         "num_key_value_heads": 32}
_FACTORS = {"long_factor": [1.0 + i for i in range(48)], "short_factor": [1.0] * 48}
PUBLISHED = {
    "Phi-3-mini-4k-instruct": {**_COMMON, **_MINI, "max_position_embeddings": 4096,
                               "original_max_position_embeddings": 4096, "rope_scaling": None, "sliding_window": 2047},
    "Phi-3-mini-128k-instruct": {**_COMMON, **_MINI, "max_position_embeddings": 131072, "attention_bias": False,
                                 "original_max_position_embeddings": 4096, "sliding_window": 262144,
                                 "rope_scaling": {**_FACTORS, "type": "longrope"}},
    "Phi-3-mini-128k-instruct (first release)": {**_COMMON, **_MINI, "max_position_embeddings": 131072,
                                                 "original_max_position_embeddings": 4096, "sliding_window": 262144,
                                                 "rope_scaling": {**_FACTORS, "type": "su"}},
    "Phi-3.5-mini-instruct": {**_COMMON, **_MINI, "max_position_embeddings": 131072, "attention_bias": False,
                              "original_max_position_embeddings": 4096, "sliding_window": 262144,
                              "rope_scaling": {**_FACTORS, "type": "longrope"}},
    "Phi-3-medium-4k-instruct": {**_COMMON, "hidden_size": 5120, "intermediate_size": 17920, "num_attention_heads": 40,
                                 "num_hidden_layers": 40, "num_key_value_heads": 10, "max_position_embeddings": 4096,
                                 "original_max_position_embeddings": 4096, "rope_scaling": None,
                                 "sliding_window": 2047},
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_configs_are_read_without_surprises(tmp_path, name):
    raw = PUBLISHED[name]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = read_config(tmp_path)
    assert config.unknown_keys == ()
    assert config.head_dim == raw["hidden_size"] // raw["num_attention_heads"]
    assert config.kv_heads == raw["num_key_value_heads"]
    assert config.sliding_window == raw["sliding_window"]
    if raw["rope_scaling"]:
        assert config.long_rope.long_factor == tuple(_FACTORS["long_factor"])
        expected = (1 + np.log(131072 / 4096) / np.log(4096)) ** 0.5
        assert config.long_rope.attention_factor == pytest.approx(expected)
    else:
        assert config.long_rope is None


def test_a_cancel_ends_the_reference_child_at_once(tiny_model, adapters):
    """Found in review: closing the window during the check waited for the whole reference."""
    import threading
    import time

    from muse_desktop.base.events import CancelToken, Cancelled
    from converters.reference import reference_logits

    token = CancelToken()
    threading.Timer(1.0, token.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        reference_logits(tiny_model, default_token_ids(tiny_model), adapters["all"], cancel=token)
    assert time.monotonic() - started < 5.0  # the child takes ~7 s to finish on its own here
