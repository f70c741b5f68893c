"""Flash attention and a q8_0 key/value cache: what they cost in memory and change in the logits."""

from __future__ import annotations

import numpy as np
import pytest

from muse_desktop.chat.engine import ChatEngine, EngineSettings, ModelError
from muse_desktop.models.demo_model import Variant
from muse_desktop.base.prompting import Turn

from helpers import last_logits

QUESTION = [Turn("user", "Why is a balanced diet important? Please explain it slowly.")]


def filled_per_token(chat, ids) -> float:
    import llama_cpp

    chat.llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(chat.llm.ctx), True)
    empty = llama_cpp.llama_state_get_size(chat.llm.ctx)
    chat.llm.eval(ids)
    return (llama_cpp.llama_state_get_size(chat.llm.ctx) - empty) / len(ids)


@pytest.fixture(scope="module")
def wide_heads(tmp_path_factory, tiny_models):
    """A tiny Phi-3 whose heads are 32 wide: llama.cpp's q8_0 blocks (32 values) must divide them."""
    from converters.convert import convert_model
    from muse_desktop.models.demo_model import Shape, build_demo_model

    root = tmp_path_factory.mktemp("wide")
    out = {}
    for name, kv_heads in (("full", 4), ("gqa", 2)):
        folder = build_demo_model(root / name, tokenizer_model=tiny_models[Variant.MINI_4K] / "tokenizer.model",
                                  shape=Shape(hidden=128, heads=4, kv_heads=kv_heads, intermediate=256), seed=3)
        out[name] = root / f"{name}.gguf"
        list(convert_model(folder, out[name], "f32"))
    return out


@pytest.mark.parametrize("heads", ["full", "gqa"])
def test_flash_attention_and_a_q8_0_cache_keep_the_answer_and_halve_the_cache(wide_heads, heads):
    engines = {name: ChatEngine(wide_heads[heads], EngineSettings(context_length=512, threads=2, **kw))
               for name, kw in (("plain", {}), ("flash", {"flash_attn": True}),
                                ("q8_0", {"flash_attn": True, "kv_cache": "q8_0"}))}
    try:
        ids = engines["plain"].prompt_ids("Child", QUESTION)
        logits = {name: last_logits(chat, ids) for name, chat in engines.items()}
        spread = logits["plain"].std()
        # Flash attention is the same sum in another order (its queries rounded to F16 on this CPU).
        assert np.abs(logits["flash"] - logits["plain"]).max() < 0.02 * spread
        assert logits["flash"].argmax() == logits["plain"].argmax()
        # q8_0 rounds every key and value to 8 bits: small, but more than rounding noise.
        change = np.abs(logits["q8_0"] - logits["plain"]).max()
        assert 1e-6 * spread < change < 0.05 * spread
        assert logits["q8_0"].argmax() == logits["plain"].argmax()
        # what "Longer memory…" quotes follows the cache type, and llama.cpp agrees
        for name, chat in engines.items():
            measured = filled_per_token(chat, ids)
            assert abs(measured - chat.kv_cache_bytes(1)) / chat.kv_cache_bytes(1) < 0.2, name
        assert engines["q8_0"].kv_cache_bytes(4096) == pytest.approx(engines["plain"].kv_cache_bytes(4096) * 17 / 32)
    finally:
        for chat in engines.values():
            chat.close()


def test_a_quantized_cache_without_flash_attention_is_refused_with_a_reason(tiny_gguf):
    with pytest.raises(ModelError, match="needs flash attention"):
        ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=512, kv_cache="q8_0"))
    with pytest.raises(ModelError, match="Unknown key/value cache type 'q4'"):
        ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=512, kv_cache="q4", flash_attn=True))
