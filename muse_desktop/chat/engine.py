"""Run a GGUF Phi-3 model with llama.cpp and stream answers adapted to a user type.

The token ids come from :mod:`muse_desktop.prompting` with llama.cpp's own
tokenizer behind the contract's adapter, so the model is fed exactly the ids the
trainer trains on. Text is streamed as whole characters (a character split over
byte tokens is held back until complete), generation stops at ``<|end|>`` or
``<|endoftext|>``, special tokens are never shown, a cancel takes effect before
the next token and also stops the evaluation of a long prompt (llama.cpp's abort
callback, checked while a batch is computed, and a check between batches), the
model is never freed while an answer is being written, the evaluated prefix is
reused between turns (llama-cpp-python
compares the new ids with the cached ones), and the oldest turns are dropped
when a conversation outgrows the context.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from converters.errors import ConversionError
from converters.gguf_check import inspect_gguf
from muse_desktop.errors import MuseError
from muse_desktop.events import CancelToken, Done, Event, Log, Text
from muse_desktop.prompting import InstructionTemplate, PromptError, Special, Turn, build_pieces, encode
from muse_desktop.prompting.llama import LlamaCppTokenizer


class ModelError(MuseError, ValueError):
    """The model (or adapter) cannot be used; the message says why, for the user."""

    exit_code = 2  # the command line: what was given cannot be used


@dataclass
class EngineSettings:
    threads: int = 0  # 0: the physical cores, as llama.cpp prefers
    context_length: int = 4096
    gpu_layers: int = 0
    batch_size: int = 256
    # LongRoPE models: allow a context beyond the original one (see effective_context).
    long_context: bool = False


LONG_CONTEXT = 8192  # what "longer memory" asks for: twice Phi-3-mini-128k's original context


def effective_context(info, settings: EngineSettings) -> tuple[int, str]:
    """The context a model is opened with, and a note for the person when it differs from the setting.

    llama.cpp chooses a LongRoPE model's rope factors once, by the context it is
    created with: above the original context every token uses the long factors,
    also in a short conversation, where transformers (and so training) used the
    short ones. Fine-tunes lose the most there. So the context stays at the original
    one unless the person asked for more.
    """
    wanted = settings.context_length
    original = info.original_context_length
    if not info.long_rope or not original or wanted <= original:
        return wanted, ""
    if settings.long_context:
        return wanted, "Longer memory is on: MUsE keeps more in mind, and its answers are a little less exact."
    words = round(original * 0.75, -1)  # about three words for every four tokens of English
    return original, (f"To answer as well as it can, MUsE keeps about {words:,.0f} words of a conversation in "
                      "mind. “Longer memory” in the Caregiver menu keeps more, at some cost in answer quality.")


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 512
    repeat_penalty: float = 1.1
    seed: int | None = None


# Shorter, calmer answers where long ones lose the reader (MUsE's user types).
_SHORT = {"young child": 160, "child": 220, "preschooler": 160, "elementary school student": 220}
_MEDIUM = {"teenager": 380, "elderly": 380, "very elderly": 300, "language learner": 300}


def default_sampling(prompt_name: str) -> Sampling:
    """Sampling settings suited to a user type (by its prompt form)."""
    key = prompt_name.strip().casefold()
    if key in _SHORT:
        return Sampling(temperature=0.6, max_new_tokens=_SHORT[key])
    if key in _MEDIUM:
        return Sampling(temperature=0.6, max_new_tokens=_MEDIUM[key])
    return Sampling()


@dataclass(frozen=True)
class AdapterSpec:
    path: str
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "AdapterSpec":
        """``PATH`` or ``PATH:SCALE`` (the scale after the last colon, if it is a number)."""
        path, sep, scale = text.rpartition(":")
        if sep and path:
            try:
                return cls(path, float(scale))
            except ValueError:
                pass
        return cls(text, 1.0)


def default_threads() -> int:
    count = os.cpu_count() or 2
    return max(1, count // 2 if count > 4 else count)


@dataclass
class _Loaded:
    spec: AdapterSpec
    handle: object


class ChatEngine:
    """One loaded model (with its adapters) that answers conversations."""

    def __init__(self, model_path: str | Path, settings: EngineSettings | None = None,
                 adapters: Sequence[AdapterSpec] = ()):
        self.settings = settings or EngineSettings()
        self.model_path = Path(model_path)
        try:
            self.info = inspect_gguf(self.model_path)
        except ConversionError as exc:
            raise ModelError(str(exc)) from None
        from llama_cpp import Llama

        n_ctx, self.context_note = effective_context(self.info, self.settings)
        try:
            self.llm = Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_batch=self.settings.batch_size,
                n_threads=self.settings.threads or default_threads(),
                n_gpu_layers=self.settings.gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {self.model_path.name}: {exc}") from None
        self.tokenizer = LlamaCppTokenizer(self.llm)
        self.stop_ids = {self.llm.token_eos()}
        for token in Special.END_OF_GENERATION:
            try:
                self.stop_ids.add(self.tokenizer.special_id(token))
            except KeyError:
                pass
        self._adapters: list[_Loaded] = []
        self._users = 0  # generators running now; close() waits for the last one
        self._close_pending = False
        self._usage = threading.Lock()
        self._cancel: CancelToken | None = None
        self.set_adapters(adapters)

    # -- adapters ----------------------------------------------------------------------

    def set_adapters(self, adapters: Sequence[AdapterSpec]) -> None:
        """Apply GGUF LoRA adapters (with their scales) without reloading the base."""
        import llama_cpp

        loaded: dict[str, _Loaded] = {item.spec.path: item for item in self._adapters}
        chosen: list[_Loaded] = []
        for spec in adapters:
            previous = loaded.get(spec.path)
            if previous is not None:
                chosen.append(_Loaded(spec, previous.handle))
                continue
            try:
                info = inspect_gguf(spec.path, expect="adapter")
            except ConversionError as exc:
                raise ModelError(str(exc)) from None
            if info.architecture != self.info.architecture:
                raise ModelError(f"{Path(spec.path).name} is for '{info.architecture}', the model is '{self.info.architecture}'.")
            handle = llama_cpp.llama_adapter_lora_init(self.llm.model, str(spec.path).encode("utf-8"))
            if not handle:  # a NULL pointer object, not None
                raise ModelError(f"llama.cpp refused the adapter {Path(spec.path).name}: its tensors do not fit this model.")
            chosen.append(_Loaded(spec, handle))
        count = len(chosen)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(count, 1))(*[c.handle for c in chosen])
        scales = (ctypes.c_float * max(count, 1))(*[c.spec.scale for c in chosen])
        code = llama_cpp.llama_set_adapters_lora(
            self.llm.ctx, ctypes.cast(handles, ctypes.POINTER(llama_cpp.llama_adapter_lora_p_ctypes)), count, scales
        )
        if code != 0:
            raise ModelError(f"llama.cpp could not apply the adapters (code {code}).")
        self._adapters = chosen
        self.llm.reset()  # the cached prefix was computed with other weights

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Memory llama.cpp's F16 key/value cache takes for ``n_ctx`` tokens of this model."""
        import llama_cpp

        model = self.llm.model
        layers = llama_cpp.llama_model_n_layer(model)
        head_dim = llama_cpp.llama_model_n_embd(model) // max(1, llama_cpp.llama_model_n_head(model))
        return 2 * layers * n_ctx * llama_cpp.llama_model_n_head_kv(model) * head_dim * 2

    @property
    def adapters(self) -> list[AdapterSpec]:
        return [item.spec for item in self._adapters]

    # -- prompts -----------------------------------------------------------------------

    def prompt_ids(self, user_type: str, turns: Sequence[Turn],
                   template: InstructionTemplate | str | None = None) -> list[int]:
        return encode(build_pieces(user_type, turns, template, add_generation_prompt=True), self.tokenizer).input_ids

    def answer_room(self, max_new_tokens: int) -> int:
        """Tokens kept free for the answer: what was asked, but at most a quarter of the context."""
        return max(1, min(max_new_tokens, max(self.llm.n_ctx() // 4, 64)))

    def fit(self, user_type: str, turns: Sequence[Turn], template, max_new_tokens: int) -> tuple[list[int], int]:
        """Ids that leave room for the answer, dropping the oldest exchanges; returns (ids, dropped turns)."""
        budget = self.llm.n_ctx() - self.answer_room(max_new_tokens)
        start = 0
        while True:
            ids = self.prompt_ids(user_type, turns[start:], template)
            if len(ids) <= budget:
                return ids, start
            if start + 2 >= len(turns):
                raise PromptError(
                    f"The message is too long for this model's memory ({len(ids)} tokens; "
                    f"at most {budget} with room for the answer). Please shorten it."
                )
            start += 2  # one question and its answer

    # -- generation --------------------------------------------------------------------

    def _should_abort(self, _data) -> bool:
        return self._cancel is not None and self._cancel.cancelled

    def _evaluate_prompt(self, ids: list[int], cancel: CancelToken | None) -> bool:
        """Evaluate the part of the prompt not in the cache, stoppable; False when cancelled.

        The abort callback is installed only for this: called for every graph node, it
        would cost decode speed while the answer is written (cancel is checked per token there).
        """
        import llama_cpp

        llm = self.llm
        start = llm.longest_token_prefix(llm._input_ids.tolist(), ids) if llm.n_tokens else 0
        if cancel is None or start >= len(ids):
            return True  # llm.generate() replays the last token itself
        llm.n_tokens = start  # eval() drops the cached tokens after the shared prefix
        self._cancel = cancel
        callback = llama_cpp.ggml_abort_callback(self._should_abort)
        llama_cpp.llama_set_abort_callback(llm.ctx, callback, None)
        try:
            for begin in range(start, len(ids), llm.n_batch):
                if cancel.cancelled:
                    return False
                try:
                    llm.eval(ids[begin:begin + llm.n_batch])
                except RuntimeError:
                    if cancel.cancelled:  # llama_decode stopped by the abort callback
                        return False
                    raise
        finally:
            llama_cpp.llama_set_abort_callback(llm.ctx, llama_cpp.ggml_abort_callback(), None)
            self._cancel = None
        return not cancel.cancelled

    def generate(
        self,
        user_type: str,
        turns: Sequence[Turn],
        template: InstructionTemplate | str | None = None,
        sampling: Sampling | None = None,
        cancel: CancelToken | None = None,
        logits_processor: Callable | None = None,
    ) -> Iterator[Event]:
        """Stream the answer to the last user turn as Text events, then Done (data has the details).

        ``logits_processor`` (``(ids, scores) -> scores``) may reshape each step's
        scores, e.g. to forbid or force tokens.
        """
        with self._usage:
            if self._close_pending or self.llm is None:
                raise ModelError("The model was closed.")
            self._users += 1
        try:
            yield from self._generate(user_type, turns, template, sampling, cancel, logits_processor)
        finally:
            with self._usage:
                self._users -= 1
                close_now = self._close_pending and self._users == 0
            if close_now:
                self._free()

    def _generate(self, user_type, turns, template, sampling, cancel, logits_processor) -> Iterator[Event]:
        sampling = sampling or default_sampling(user_type)
        ids, dropped = self.fit(user_type, turns, template, sampling.max_new_tokens)
        if dropped:
            yield Log(f"This conversation is longer than the model can remember; the oldest {dropped // 2} "
                      "exchange(s) were left out. Who you are is still known.", "warning")
        cached = self.llm.longest_token_prefix(self.llm._input_ids.tolist(), ids) if self.llm.n_tokens else 0
        if sampling.seed is not None:
            self.llm.set_seed(sampling.seed)
        started = time.perf_counter()
        if not self._evaluate_prompt(ids, cancel):
            yield Done("answered", data={
                "text": "", "token_ids": [], "stopped": "cancelled", "prompt_tokens": len(ids),
                "cached_tokens": cached, "dropped_turns": dropped,
                "time_to_first_token_s": 0.0, "tokens_per_s": 0.0, "sampling": sampling.__dict__})
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        generated: list[int] = []
        text_parts: list[str] = []
        stopped = "length"
        first_token_at = None
        processors = None
        if logits_processor is not None:
            from llama_cpp import LogitsProcessorList

            processors = LogitsProcessorList([logits_processor])
        tokens = self.llm.generate(
            ids,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            repeat_penalty=sampling.repeat_penalty,
            logits_processor=processors,
            reset=True,
        )
        try:
            for token in tokens:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if token in self.stop_ids:
                    stopped = "end"
                    break
                generated.append(token)
                piece = decoder.decode(self.llm.detokenize([token], special=False))
                if not text_parts:
                    piece = piece[1:] if piece.startswith(" ") else piece  # the tokenizer's space prefix
                if piece:
                    text_parts.append(piece)
                    yield Text(piece)
                if cancel is not None and cancel.cancelled:
                    stopped = "cancelled"
                    break
                if len(generated) >= sampling.max_new_tokens or len(ids) + len(generated) >= self.llm.n_ctx() - 1:
                    break
        finally:
            tokens.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            text_parts.append(tail)
            yield Text(tail)
        elapsed = time.perf_counter() - started
        decode_time = elapsed - ((first_token_at or started) - started)
        yield Done(
            "answered",
            data={
                "text": "".join(text_parts),
                "token_ids": generated,
                "stopped": stopped,
                "prompt_tokens": len(ids),
                "cached_tokens": cached,
                "dropped_turns": dropped,
                "time_to_first_token_s": (first_token_at or started) - started,
                # Tokens after the first, over the time since the first: the decode rate.
                "tokens_per_s": (len(generated) - 1) / decode_time if decode_time > 0 and len(generated) > 1 else 0.0,
                "sampling": sampling.__dict__,
            },
        )

    def close(self) -> None:
        """Free the model, at once or, while an answer is being written, when it ends."""
        with self._usage:
            self._close_pending = True
            if self._users:
                return
        self._free()

    def _free(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()
