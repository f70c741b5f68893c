"""Opening a llama.cpp model the same way everywhere: the chat and the checks by logits.

llama.cpp moves the weights into "extra" CPU buffers when it opens a model (a repacked
layout that speeds up prompts, and on processors with Intel AMX the AMX layout). The AMX
matrix code crashes the whole process on some models and machines (llama.cpp issue
20824, still open; seen here with a segmentation fault in ``ggml_backend_amx_mul_mat`` on
the first answer). So on a processor where llama.cpp would use AMX, MUsE keeps the
weights in llama.cpp's plain layout: slower prompts there, never a crash. Everywhere else
nothing changes. ``llama_cpp.Llama`` has no keyword for this, so the one default it reads
is changed for the moment the model opens, under a lock.
"""

from __future__ import annotations

import functools
import logging
import threading

log = logging.getLogger(__name__)
_OPENING = threading.Lock()


def uses_amx(system_info: str) -> bool:
    """Whether llama.cpp's system line says it will put weights in AMX buffers."""
    return "AMX_INT8 = 1" in system_info


@functools.cache
def extra_buffers_safe() -> bool:
    import llama_cpp

    if not uses_amx(llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")):
        return True
    log.info("This processor has AMX: llama.cpp's AMX code can crash (llama.cpp issue 20824), "
             "so models open with llama.cpp's plain weight layout.")
    return False


def open_llama(**kwargs):
    """``llama_cpp.Llama(**kwargs)``, without llama.cpp's extra weight buffers where they are unsafe."""
    import llama_cpp
    from llama_cpp import Llama

    if extra_buffers_safe():
        return Llama(**kwargs)
    low = llama_cpp.llama_cpp
    with _OPENING:
        default = low.llama_model_default_params

        def plain_layout():
            params = default()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = plain_layout
        try:
            return Llama(**kwargs)
        finally:
            low.llama_model_default_params = default
