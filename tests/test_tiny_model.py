"""The tiny Phi-3 checkpoints: real HF files that transformers loads completely and runs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from muse_desktop.models.demo_model import VOCAB_MULTIPLE, Variant, build_demo_model
from muse_desktop.base.prompting import Special


def config_of(path):
    return json.loads((path / "config.json").read_text())


def stored_weights(path):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    weights = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(load_file(path / shard))
    assert set(weights) == set(index["weight_map"])
    return weights


def test_all_three_variants_exist_with_their_shapes(tiny_models):
    base = config_of(tiny_models[Variant.MINI_4K])
    long = config_of(tiny_models[Variant.MINI_128K])
    gqa = config_of(tiny_models[Variant.GQA])
    for config in (base, long, gqa):
        assert config["model_type"] == "phi3" and config["architectures"] == ["Phi3ForCausalLM"]
        assert config["hidden_size"] == 64
        assert config["vocab_size"] % VOCAB_MULTIPLE == 0
    assert base["rope_scaling"] is None
    assert base["num_key_value_heads"] == base["num_attention_heads"]
    assert gqa["num_key_value_heads"] < gqa["num_attention_heads"]
    scaling = long["rope_scaling"]
    head_dim = long["hidden_size"] // long["num_attention_heads"]
    assert scaling["type"] == "longrope"
    assert len(scaling["long_factor"]) == len(scaling["short_factor"]) == head_dim // 2
    assert long["original_max_position_embeddings"] < long["max_position_embeddings"]


def test_checkpoint_is_sharded_like_phi3(tiny_model):
    assert len(list(tiny_model.glob("model-*-of-*.safetensors"))) == 2
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tiny_model / name).is_file(), name


@pytest.mark.parametrize("variant", Variant.ALL)
def test_transformers_loads_every_weight_and_generates(tiny_models, variant):
    path = tiny_models[variant]
    model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
    # A misnamed tensor would be silently re-initialised: demand a complete load.
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    for name, array in stored_weights(path).items():
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    inputs = tokenizer("<|user|>Why is the sky blue?<|end|>\n<|assistant|>\n", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 12
    assert isinstance(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:]), str)


def test_long_rope_variant_runs_past_its_original_context(tiny_models):
    path = tiny_models[Variant.MINI_128K]
    config = config_of(path)
    model = AutoModelForCausalLM.from_pretrained(str(path))
    length = config["original_max_position_embeddings"] + 40
    ids = torch.arange(3, 3 + length).remainder(500).unsqueeze(0)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, length, config["vocab_size"])
    assert torch.isfinite(logits).all()


def test_tokenizer_has_phi3_added_tokens_in_phi3_order(tiny_model, hf_tokenizer):
    config = config_of(tiny_model)
    ids = [hf_tokenizer.convert_tokens_to_ids(token) for token in Special.PHI3_ADDED]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert ids[-1] < config["vocab_size"]  # the rest are padding entries, as in Phi-3
    assert config["eos_token_id"] == config["pad_token_id"] == hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert hf_tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>"]) == [0, 1, 2]
    generation = json.loads((tiny_model / "generation_config.json").read_text())
    assert hf_tokenizer.convert_tokens_to_ids("<|end|>") in generation["eos_token_id"]


@pytest.mark.parametrize(
    "text",
    [
        "Zebras 𝔘 ⚙ ∮ never seen",  # characters absent from the training text: byte fallback
        "tabs\tand  two spaces and trailing   ",  # whitespace kept
        "ﬁne ligature and Ｆｕｌｌwidth",  # identity normalisation: no NFKC folding
        "line one\nline two",
    ],
)
def test_tokenizer_round_trips_text_exactly(hf_tokenizer, text):
    ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert hf_tokenizer.unk_token_id not in ids
    assert hf_tokenizer.decode(ids) == text


def test_build_is_deterministic(tmp_path, tiny_model):
    again = build_demo_model(tmp_path / "again", Variant.MINI_4K)
    for name in ("tokenizer.model", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json", "tokenizer.json"):
        first = hashlib.sha256((tiny_model / name).read_bytes()).hexdigest()
        second = hashlib.sha256((again / name).read_bytes()).hexdigest()
        assert first == second, name


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        build_demo_model(tmp_path, "70b")
