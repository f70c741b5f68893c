"""llama.cpp's AMX weight layout crashes on some machines: models open in the plain layout there.

On a processor with AMX (this project's build machine has it) the first answer of a
quantized model died with a segmentation fault inside ``ggml_backend_amx_mul_mat``
(``muse-desktop quantize``'s check exited -11: tests/test_cli.py). Everything that opens
a model goes through ``open_llama``.
"""

from __future__ import annotations

import llama_cpp
import pytest

from muse_desktop.base import llamacpp
from muse_desktop.models.demo_model import Variant


@pytest.mark.parametrize("safe", [True, False])
def test_the_extra_buffers_are_off_exactly_where_amx_is_used(tiny_gguf, monkeypatch, safe):
    monkeypatch.setattr(llamacpp, "extra_buffers_safe", lambda: safe)
    default = llama_cpp.llama_cpp.llama_model_default_params
    llm = llamacpp.open_llama(model_path=str(tiny_gguf[Variant.MINI_4K]), n_ctx=64, verbose=False)
    assert llm.model_params.use_extra_bufts is safe
    assert llama_cpp.llama_cpp.llama_model_default_params is default  # put back for everyone else
    tokens = llm.tokenize(b"Hello there", add_bos=True)
    llm.eval(tokens)  # computes: on an AMX machine with the AMX layout this is where it crashed
    assert llm.n_tokens == len(tokens)


def test_amx_is_read_from_llama_cpps_own_system_line():
    assert llamacpp.uses_amx("CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |")
    assert not llamacpp.uses_amx("CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 |")
    real = llama_cpp.llama_print_system_info().decode()
    assert llamacpp.extra_buffers_safe() is not llamacpp.uses_amx(real)


def test_the_engine_opens_through_it(tiny_gguf, monkeypatch):
    from muse_desktop.chat.engine import ChatEngine, EngineSettings

    monkeypatch.setattr(llamacpp, "extra_buffers_safe", lambda: False)
    engine = ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(threads=1, context_length=256))
    assert engine.llm.model_params.use_extra_bufts is False
