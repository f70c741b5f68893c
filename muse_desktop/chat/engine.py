"""Run a GGUF Phi-3 model with llama.cpp and stream answers adapted to a user type.

The token ids come from :mod:`muse_desktop.base.prompting` with llama.cpp's own
tokenizer behind the contract's adapter, so the model is fed exactly the ids the
trainer trains on. Text is streamed as whole characters (a character split over
byte tokens is held back until complete), generation stops at ``<|end|>`` or
``<|endoftext|>``, special tokens are never shown, a cancel takes effect before
the next token and also stops the evaluation of a long prompt (llama.cpp's abort
callback, checked while a batch is computed, and a check between batches), the
model is never freed while an answer is being written, the evaluated prefix is
reused between turns (llama-cpp-python
compares the new ids with the cached ones), the oldest turns are dropped
when a conversation outgrows the context, tokens are sampled by llama.cpp's own
sampler chain (Python sees the logits only when a logits processor asks), the
instruction prefix can be kept on disk as llama.cpp state, and several answers
can be written together in one batch per step (:meth:`ChatEngine.generate_batch`).
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from converters.errors import ConversionError
from converters.gguf_check import inspect_gguf
from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CandidateText, CancelToken, Done, Event, Log, Text
from muse_desktop.base.prompting import InstructionTemplate, PromptError, Special, Turn, build_pieces, encode
from muse_desktop.base.prompting.llama import LlamaCppTokenizer


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
    # Where the evaluated instruction prefix is kept between launches (None: not kept).
    prefix_state_dir: str | None = None
    # llama.cpp's flash attention and the key/value cache's number type ("f16" or "q8_0",
    # which halves the cache and needs flash attention). Defaults chosen by measurement:
    # see BENCHMARKS.md, "Long conversations".
    flash_attn: bool = False
    kv_cache: str = "f16"


KV_TYPES = {"f16": (1, 2.0), "q8_0": (8, 34 / 32)}  # name: (ggml type id, bytes per value)


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


@dataclass
class Request:
    """One of several answers written together by :meth:`ChatEngine.generate_batch`."""

    user_type: str | None
    turns: Sequence[Turn]
    template: InstructionTemplate | str | None = None
    sampling: Sampling | None = None
    # token id -> added to its logit at every step (llama.cpp's logit-bias sampler); -inf forbids it
    logit_bias: dict[int, float] | None = None


# What llama-cpp-python's generate() uses when not told otherwise: the batched path's
# native sampler chain mirrors it, so one answer reads like another whichever path wrote it.
_TOP_K, _MIN_P, _PENALTY_LAST_N = 40, 0.05, 64


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
        from muse_desktop.base.llamacpp import open_llama

        n_ctx, self.context_note = effective_context(self.info, self.settings)
        if self.settings.kv_cache not in KV_TYPES:
            raise ModelError(f"Unknown key/value cache type {self.settings.kv_cache!r}; use one of: "
                             + ", ".join(KV_TYPES) + ".")
        if self.settings.kv_cache != "f16" and not self.settings.flash_attn:
            raise ModelError("A quantized key/value cache needs flash attention (llama.cpp cannot use it without).")
        kv_type = KV_TYPES[self.settings.kv_cache][0]
        try:
            self.llm = open_llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_batch=self.settings.batch_size,
                n_threads=self.settings.threads or default_threads(),
                n_gpu_layers=self.settings.gpu_layers,
                flash_attn=self.settings.flash_attn,
                type_k=kv_type,
                type_v=kv_type,
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
        self._batch_ctx = None  # (context, n_ctx, n_seq) for generate_batch, kept between rounds
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
        self._apply_adapters(self.llm.ctx, chosen)
        self._adapters = chosen
        self.llm.reset()  # the cached prefix was computed with other weights

    @staticmethod
    def _apply_adapters(ctx, chosen: Sequence[_Loaded]) -> None:
        import llama_cpp

        count = len(chosen)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * max(count, 1))(*[c.handle for c in chosen])
        scales = (ctypes.c_float * max(count, 1))(*[c.spec.scale for c in chosen])
        code = llama_cpp.llama_set_adapters_lora(
            ctx, ctypes.cast(handles, ctypes.POINTER(llama_cpp.llama_adapter_lora_p_ctypes)), count, scales
        )
        if code != 0:
            raise ModelError(f"llama.cpp could not apply the adapters (code {code}).")

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Memory llama.cpp's key/value cache (of this engine's number type) takes for ``n_ctx`` tokens."""
        import llama_cpp

        model = self.llm.model
        layers = llama_cpp.llama_model_n_layer(model)
        head_dim = llama_cpp.llama_model_n_embd(model) // max(1, llama_cpp.llama_model_n_head(model))
        per_value = KV_TYPES[self.settings.kv_cache][1]
        return int(2 * layers * n_ctx * llama_cpp.llama_model_n_head_kv(model) * head_dim * per_value)

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

    def _native_tokens(self, ids: list[int], sampling: Sampling) -> Iterator[int]:
        """Tokens sampled by llama.cpp's own sampler chain, one decode per token.

        No Python work on the logits: llama-cpp-python's generate() builds a sampler
        chain per call and goes through its Python sample() per token; this samples
        in C from the live logits and keeps the Llama object's cache bookkeeping
        (eval), so the prefix is still reused on the next turn.
        """
        import llama_cpp

        llm = self.llm
        cached = llm.longest_token_prefix(llm._input_ids.tolist(), ids) if llm.n_tokens else 0
        if not (cached == len(ids) == llm.n_tokens and not llm._requires_eval):  # else: the logits are live
            llm.n_tokens = min(cached, len(ids) - 1)  # at least the last token, for its logits
            llm.eval(ids[llm.n_tokens:])
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
        chain = self._sampler(sampling, None, n_vocab)
        try:
            while True:
                token = llama_cpp.llama_sampler_sample(chain, llm.ctx, -1)
                yield token
                llm.eval([token])
        finally:
            llama_cpp.llama_sampler_free(chain)

    # -- the instruction prefix kept on disk --------------------------------------------------

    def instruction_prefix(self, user_type: str | None, template=None) -> list[int]:
        """The ids every first question's prompt starts with: what two different questions share."""
        one = self.prompt_ids(user_type, [Turn("user", "a")], template)
        other = self.prompt_ids(user_type, [Turn("user", "7")], template)
        return one[:self.llm.longest_token_prefix(one, other)]

    def _prefix_state_path(self, user_type: str | None, template, prefix: list[int]) -> Path:
        """One file per (model file, template, user type, adapters, cache types, prefix ids): any change is another name.

        The file holds one sequence's cache cells (llama_state_seq_*), so it is the same
        for the chat's context and the several-answers context, whatever their size.
        """
        stat = self.model_path.stat()
        text = template.text if isinstance(template, InstructionTemplate) else template
        params = self.llm.context_params
        key = json.dumps([str(self.model_path.resolve()), stat.st_size, stat.st_mtime_ns, text, user_type,
                          [(a.spec.path, a.spec.scale) for a in self._adapters],
                          [params.type_k, params.type_v, params.flash_attn_type], prefix])
        return Path(self.settings.prefix_state_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.seqstate"

    def _saved_prefix(self, user_type: str | None, template, ids: list[int]) -> tuple[list[int], Path | None]:
        """The instruction prefix ``ids`` starts with and its state file's name (None: nothing to keep)."""
        if not self.settings.prefix_state_dir:
            return [], None
        try:
            prefix = self.instruction_prefix(user_type, template)
            path = self._prefix_state_path(user_type, template, prefix)
        except (PromptError, OSError):
            return [], None
        if len(prefix) < 2 or len(ids) <= len(prefix) or ids[:len(prefix)] != prefix:
            return [], None
        return prefix, path

    @staticmethod
    def _load_prefix(ctx, seq: int, path: Path, prefix: list[int]) -> str:
        """Put the saved prefix into sequence ``seq`` of an empty ``ctx``: "" when done, else why not.

        Used only when its SHA-256 (in a side file written after it) matches and the
        tokens llama.cpp reads back are the expected prefix; otherwise the sequence is
        left empty.
        """
        import llama_cpp

        if not path.exists():
            return "missing"
        digest_path = path.with_suffix(".sha256")
        try:
            if digest_path.read_text().strip() != hashlib.sha256(path.read_bytes()).hexdigest():
                return "its checksum does not match"
        except OSError as exc:
            return f"it cannot be read ({exc.strerror})"
        tokens = (llama_cpp.llama_token * len(prefix))()
        count = ctypes.c_size_t(0)
        read = llama_cpp.llama_state_seq_load_file(ctx, str(path).encode(), seq, tokens, len(prefix),
                                                   ctypes.byref(count))
        if read and list(tokens[:count.value]) == prefix:
            return ""
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq, -1, -1)
        return "llama.cpp could not read it back as this prefix"

    @staticmethod
    def _save_prefix(ctx, seq: int, path: Path, prefix: list[int]) -> None:
        """Keep sequence ``seq`` (holding exactly ``prefix``) on disk; a failure only costs the next start."""
        import llama_cpp

        digest_path = path.with_suffix(".sha256")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            digest_path.unlink(missing_ok=True)  # never a checksum for a half-written file
            array = (llama_cpp.llama_token * len(prefix))(*prefix)
            if llama_cpp.llama_state_seq_save_file(ctx, str(path).encode(), seq, array, len(prefix)):
                digest_path.write_text(hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError:
            pass

    def _restore_or_save_prefix(self, user_type: str | None, template, ids: list[int]) -> str:
        """Restore the saved instruction prefix into the chat's empty cache, or evaluate and save it.

        Returns a note when a saved file was there but not used (it is then made again).
        """
        import llama_cpp

        prefix, path = self._saved_prefix(user_type, template, ids)
        if path is None:
            return ""
        llm = self.llm
        problem = self._load_prefix(llm.ctx, 0, path, prefix)
        if not problem:
            llm.input_ids[:len(prefix)] = prefix
            llm.n_tokens = len(prefix)
            llm._requires_eval = True  # the restored logits are not trusted for sampling
            return ""
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        llm.eval(prefix)
        self._save_prefix(llm.ctx, 0, path, prefix)
        if problem == "missing":
            return ""
        return f"The saved start of the conversation ({path.name}) was not used: {problem}. It is made again."

    def prepare(self, user_type: str | None, template=None) -> str:
        """Before the first question: put the instruction prefix for ``user_type`` in the cache.

        Restored from its saved state (or evaluated and saved), so the first question
        evaluates only its own words. Returns a note as :meth:`generate` logs it.
        """
        try:
            with self._in_use():
                if self.llm.n_tokens:
                    return ""
                probe = self.prompt_ids(user_type, [Turn("user", "a")], template)
                return self._restore_or_save_prefix(user_type, template, probe)
        except (ModelError, PromptError):  # closed meanwhile, or no prompt for this user type: nothing to keep
            return ""

    @contextmanager
    def _in_use(self) -> Iterator[None]:
        """Hold the model open for one piece of work; close() frees it when the last one ends."""
        with self._usage:
            if self._close_pending or self.llm is None:
                raise ModelError("The model was closed.")
            self._users += 1
        try:
            yield
        finally:
            with self._usage:
                self._users -= 1
                close_now = self._close_pending and self._users == 0
            if close_now:
                self._free()

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
        with self._in_use():
            yield from self._generate(user_type, turns, template, sampling, cancel, logits_processor)

    def _generate(self, user_type, turns, template, sampling, cancel, logits_processor) -> Iterator[Event]:
        sampling = sampling or default_sampling(user_type)
        ids, dropped = self.fit(user_type, turns, template, sampling.max_new_tokens)
        if dropped:
            yield Log(f"This conversation is longer than the model can remember; the oldest {dropped // 2} "
                      "exchange(s) were left out. Who you are is still known.", "warning")
        if not self.llm.n_tokens and self.settings.prefix_state_dir:
            note = self._restore_or_save_prefix(user_type, template, ids)
            if note:
                yield Log(note, "warning")
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
        if logits_processor is None:
            tokens = self._native_tokens(ids, sampling)
        else:  # Python sees every step's scores: llama-cpp-python's own loop
            from llama_cpp import LogitsProcessorList

            tokens = self.llm.generate(
                ids,
                temp=sampling.temperature,
                top_p=sampling.top_p,
                repeat_penalty=sampling.repeat_penalty,
                logits_processor=LogitsProcessorList([logits_processor]),
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

    # -- several answers at once ----------------------------------------------------------

    def generate_batch(self, requests: Sequence[Request], cancel: CancelToken | None = None) -> Iterator[Event]:
        """Write several answers together: CandidateText events (by index), then one Done.

        The sequences are decoded in one llama.cpp batch per step, so the weights are
        read once per step for all of them; a prompt shared by several requests is
        evaluated once and shared in the cache (llama_memory_seq_cp). Each sequence
        has its own native sampler chain (seed, temperature, ...) and its own stops.
        ``Done.data["candidates"]`` has, per request, what :meth:`generate` reports.
        """
        with self._in_use():
            yield from self._generate_batch(list(requests), cancel)

    def _context_for(self, n_ctx: int, n_seq: int):
        """A context with ``n_seq`` sequences in one unified cache of at least ``n_ctx`` cells.

        The chat's own context holds one sequence (llama-cpp-python creates it so); this
        second one is made on the same weights, kept for the next round and grown when
        a round needs more.
        """
        import llama_cpp

        n_ctx = -(-n_ctx // 256) * 256
        kept = self._batch_ctx
        if kept is not None and kept[1] >= n_ctx and kept[2] >= n_seq:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(kept[0]), True)
            return kept[0]
        self._free_batch_ctx()
        params = type(self.llm.context_params).from_buffer_copy(self.llm.context_params)
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx, max(n_seq, 1), True
        ctx = llama_cpp.llama_init_from_model(self.llm.model, params)
        if not ctx:
            raise ModelError("llama.cpp could not make room for several answers at once (out of memory?).")
        self._batch_ctx = (ctx, n_ctx, n_seq)
        return ctx

    def _free_batch_ctx(self) -> None:
        import llama_cpp

        kept, self._batch_ctx = self._batch_ctx, None
        if kept is not None:
            llama_cpp.llama_free(kept[0])

    @staticmethod
    def _sampler(sampling: Sampling, logit_bias: dict[int, float] | None, n_vocab: int):
        """llama.cpp's own sampler chain for one sequence, as llama-cpp-python's generate() builds it.

        The repeat penalty sees the answer's own tokens only (llama_sampler_sample
        accepts each one), not the prompt, as the app's answers always had it.
        """
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(logit_bias))(
                *[llama_cpp.llama_logit_bias(token, bias) for token, bias in logit_bias.items()])
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(logit_bias), biases))
        add(llama_cpp.llama_sampler_init_penalties(n_vocab, _PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.temperature <= 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            add(llama_cpp.llama_sampler_init_top_k(_TOP_K))
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(_MIN_P, 1))
            add(llama_cpp.llama_sampler_init_temp(sampling.temperature))
            seed = sampling.seed if sampling.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _generate_batch(self, requests: list[Request], cancel: CancelToken | None) -> Iterator[Event]:
        import llama_cpp

        n = len(requests)
        if n == 0:
            yield Done("answered", data={"candidates": []})
            return
        samplings = [r.sampling or default_sampling(r.user_type or "") for r in requests]
        prompts = []
        for request, sampling in zip(requests, samplings, strict=True):
            ids, dropped = self.fit(request.user_type, request.turns, request.template, sampling.max_new_tokens)
            prompts.append(ids)
        # Room per sequence as generate() allows it; the cache is unified, so a shared
        # prefix takes its cells once.
        limits = [min(s.max_new_tokens, self.llm.n_ctx() - 1 - len(ids)) for s, ids in zip(samplings, prompts, strict=True)]
        plan = []  # (source sequence or -1, tokens shared with it)
        for k, ids in enumerate(prompts):
            best, shared = -1, 0
            for j in range(k):
                common = self.llm.longest_token_prefix(prompts[j], ids)
                if common > shared:
                    best, shared = j, common
            plan.append((best, min(shared, len(ids) - 1)))  # the last token is evaluated for its logits
        cells = sum(len(ids) - shared for ids, (_, shared) in zip(prompts, plan, strict=True)) + sum(limits) + n
        started = time.perf_counter()
        ctx = self._context_for(cells, n)
        self._apply_adapters(ctx, self._adapters)
        memory = llama_cpp.llama_get_memory(ctx)
        n_batch = self.llm.n_batch
        n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.llm.model))
        batch = llama_cpp.llama_batch_init(max(n_batch, n), 0, 1)
        samplers = [self._sampler(s, r.logit_bias, n_vocab) for s, r in zip(samplings, requests, strict=True)]
        first: list[int | None] = [None] * n
        evaluated = 0

        def decode(items) -> None:
            """One llama_decode of (sequence, position, token, wants logits) items."""
            batch.n_tokens = len(items)
            for i, (seq, pos, token, logits) in enumerate(items):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, logits
            code = llama_cpp.llama_decode(ctx, batch)
            if code != 0:
                if cancel is not None and cancel.cancelled:
                    return
                raise ModelError(f"llama.cpp could not evaluate the answers (code {code}).")

        self._cancel = cancel
        callback = llama_cpp.ggml_abort_callback(self._should_abort)
        try:
            # The prompts: each sequence starts from its saved instruction prefix (the chat's
            # own file) when that is longer than what it shares with an earlier prompt; else
            # it copies the shared cells and evaluates (and saves) its prefix if it has one;
            # then it evaluates the rest; its first token is sampled from its last logits.
            pending = []  # items waiting to fill a batch
            for k, ids in enumerate(prompts):
                source, shared = plan[k]
                prefix, path = self._saved_prefix(requests[k].user_type, requests[k].template, ids)
                if path is not None and len(prefix) > shared and not self._load_prefix(ctx, k, path, prefix):
                    shared, source, path = len(prefix), -1, None  # restored
                if source >= 0 and shared:
                    if pending and any(item[0] == source for item in pending):
                        self._flush_prompt(decode, pending, samplers, ctx, first, cancel)
                    llama_cpp.llama_memory_seq_cp(memory, source, k, 0, shared)
                if path is not None and len(prefix) > shared:
                    if pending:  # the prefix alone, as the chat evaluates it, then kept
                        self._flush_prompt(decode, pending, samplers, ctx, first, cancel, callback)
                    for begin in range(shared, len(prefix), n_batch):
                        pending.extend((k, pos, prefix[pos], False)
                                       for pos in range(begin, min(begin + n_batch, len(prefix))))
                        self._flush_prompt(decode, pending, samplers, ctx, first, cancel, callback)
                    if cancel is not None and cancel.cancelled:
                        break
                    self._save_prefix(ctx, k, path, prefix)
                    evaluated += len(prefix) - shared
                    shared = len(prefix)
                for pos in range(shared, len(ids)):
                    pending.append((k, pos, ids[pos], pos == len(ids) - 1))
                    evaluated += 1
                    if len(pending) == n_batch:
                        self._flush_prompt(decode, pending, samplers, ctx, first, cancel, callback)
                if cancel is not None and cancel.cancelled:
                    break
            if pending and not (cancel is not None and cancel.cancelled):
                self._flush_prompt(decode, pending, samplers, ctx, first, cancel, callback)
            prompt_done = time.perf_counter()
            yield from self._decode_together(requests, samplings, prompts, limits, first, samplers, decode, ctx,
                                             cancel, started, prompt_done, evaluated)
        finally:
            self._cancel = None
            for chain in samplers:
                llama_cpp.llama_sampler_free(chain)
            llama_cpp.llama_batch_free(batch)

    def _flush_prompt(self, decode, pending, samplers, ctx, first, cancel, callback=None) -> None:
        import llama_cpp

        if cancel is not None and cancel.cancelled:
            pending.clear()
            return
        if callback is not None and cancel is not None:  # stoppable while a long prompt is computed
            llama_cpp.llama_set_abort_callback(ctx, callback, None)
        try:
            decode(pending)
        finally:
            if callback is not None and cancel is not None:
                llama_cpp.llama_set_abort_callback(ctx, llama_cpp.ggml_abort_callback(), None)
        if not (cancel is not None and cancel.cancelled):
            for i, (seq, _pos, _token, logits) in enumerate(pending):
                if logits:
                    first[seq] = llama_cpp.llama_sampler_sample(samplers[seq], ctx, i)
        pending.clear()

    def _decode_together(self, requests, samplings, prompts, limits, first, samplers, decode, ctx, cancel,
                         started, prompt_done, evaluated) -> Iterator[Event]:
        import llama_cpp

        n = len(requests)
        decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(n)]
        generated: list[list[int]] = [[] for _ in range(n)]
        texts: list[list[str]] = [[] for _ in range(n)]
        stopped = ["length"] * n
        active = []
        cancelled = cancel is not None and cancel.cancelled
        for k in range(n):
            if cancelled:
                stopped[k] = "cancelled"
            elif limits[k] <= 0:
                pass
            else:
                active.append(k)
        next_token = list(first)
        while active:
            still = []
            for k in active:  # the token just sampled: a stop, or text
                token = next_token[k]
                if token in self.stop_ids:
                    stopped[k] = "end"
                    continue
                generated[k].append(token)
                piece = decoders[k].decode(self.llm.detokenize([token], special=False))
                if not texts[k]:
                    piece = piece[1:] if piece.startswith(" ") else piece  # the tokenizer's space prefix
                if piece:
                    texts[k].append(piece)
                    yield CandidateText(k, piece)
                if len(generated[k]) < limits[k]:
                    still.append(k)
            if cancel is not None and cancel.cancelled:
                for k in still:
                    stopped[k] = "cancelled"
                break
            active = still
            if not active:
                break
            decode([(k, len(prompts[k]) + len(generated[k]) - 1, generated[k][-1], True) for k in active])
            if cancel is not None and cancel.cancelled:
                for k in active:
                    stopped[k] = "cancelled"
                break
            for i, k in enumerate(active):
                next_token[k] = llama_cpp.llama_sampler_sample(samplers[k], ctx, i)
        candidates = []
        for k in range(n):
            tail = decoders[k].decode(b"", final=True)
            if tail:
                texts[k].append(tail)
                yield CandidateText(k, tail)
            candidates.append({"text": "".join(texts[k]), "token_ids": generated[k], "stopped": stopped[k],
                               "prompt_tokens": len(prompts[k]), "sampling": dict(samplings[k].__dict__)})
        elapsed = time.perf_counter() - started
        total = sum(len(g) for g in generated)
        decode_time = elapsed - (prompt_done - started)
        yield Done("answered", data={
            "candidates": candidates,
            "evaluated_prompt_tokens": evaluated,  # a shared prompt counts once
            "time_s": elapsed,
            "time_to_first_token_s": prompt_done - started,
            # all sequences' tokens after their first, over the time since the prompt
            "tokens_per_s": (total - n) / decode_time if decode_time > 0 and total > n else 0.0,
        })

    def close(self) -> None:
        """Free the model, at once or, while an answer is being written, when it ends."""
        with self._usage:
            self._close_pending = True
            if self._users:
                return
        self._free()

    def _free(self) -> None:
        self._free_batch_ctx()
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()
