"""The chat engine on the tiny GGUF: ids, streaming, stops, cancel, cache reuse, context, adapters."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from converters.convert import convert_adapter
from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings, ModelError, Sampling, default_sampling
from muse_desktop.models.demo_model import Variant
from muse_desktop.base.events import CancelToken, Done, Log, Text
from muse_desktop.base.prompting import PromptError, Turn, build_pieces, encode
from muse_desktop.base.prompting.hf import HFTokenizer

GREEDY = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=24)
QUESTION = [Turn("user", "Why is a balanced diet important?")]
LONGER = [Turn("user", "Hi!"), Turn("assistant", "Hello, café 😀 friend."), Turn("user", "  And water?\n")]


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    chat = ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=1024, threads=2))
    yield chat
    chat.close()


def answer(chat, turns, **kwargs):
    events = list(chat.generate("Elderly", turns, **kwargs))
    done = events[-1]
    assert isinstance(done, Done)
    return events, done.data


def piece_bytes(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


def forcing(sequence):
    """A logits processor that makes the model emit ``sequence``, one id per step."""
    state = {"step": 0}

    def process(_ids, scores):
        forced = np.full_like(scores, -np.inf)
        forced[sequence[min(state["step"], len(sequence) - 1)]] = 0.0
        state["step"] += 1
        return forced

    return process


@pytest.mark.parametrize("turns", [QUESTION, LONGER])
def test_engine_feeds_llama_cpp_the_training_ids(engine, hf_tokenizer, turns):
    training = encode(build_pieces("Elderly", turns, add_generation_prompt=True), HFTokenizer(hf_tokenizer)).input_ids
    assert engine.prompt_ids("Elderly", turns) == training


def test_greedy_answer_equals_transformers_greedy(engine, tiny_model, hf_tokenizer):
    """An independent computation: transformers generating from the same ids."""
    ids = engine.prompt_ids("Elderly", QUESTION)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    stop = sorted(engine.stop_ids)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=24, eos_token_id=stop,
                             repetition_penalty=1.0, pad_token_id=stop[0])
    expected = [t for t in out[0, len(ids):].tolist() if t not in stop]
    events, data = answer(engine, QUESTION, sampling=GREEDY)
    assert data["token_ids"] == expected[: len(data["token_ids"])] and len(data["token_ids"]) >= 20
    streamed = "".join(e.delta for e in events if isinstance(e, Text))
    assert streamed == data["text"]
    # Random weights emit invalid UTF-8 too: decode the pieces' bytes the standard way
    # (transformers replaces every byte of an invalid run, Python each maximal invalid part).
    expected_bytes = b"".join(piece_bytes(t) for t in hf_tokenizer.convert_ids_to_tokens(data["token_ids"]))
    expected_text = expected_bytes.decode("utf-8", errors="replace")
    assert data["text"] == (expected_text[1:] if expected_text.startswith(" ") else expected_text)


def test_stops_at_end_and_never_shows_special_tokens(engine, hf_tokenizer):
    ids = hf_tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    end = hf_tokenizer.convert_tokens_to_ids("<|end|>")
    events, data = answer(engine, QUESTION, sampling=GREEDY, logits_processor=forcing(ids + [end, ids[0]]))
    assert data["stopped"] == "end" and data["token_ids"] == ids
    assert data["text"] == "Hello there"
    assert "<|" not in "".join(e.delta for e in events if isinstance(e, Text))


def test_multibyte_characters_split_over_byte_tokens_stream_whole(engine, hf_tokenizer):
    # "€" is not in the tiny vocabulary: it is three byte-fallback tokens.
    pieces = ["<0xE2>", "<0x82>", "<0xAC>"]
    euro = hf_tokenizer.convert_tokens_to_ids(pieces)
    words = hf_tokenizer("costs 5", add_special_tokens=False)["input_ids"]
    end = hf_tokenizer.convert_tokens_to_ids("<|end|>")
    events, data = answer(engine, QUESTION, sampling=GREEDY, logits_processor=forcing(words + euro + [end]))
    deltas = [e.delta for e in events if isinstance(e, Text)]
    assert data["text"] == "costs 5€"
    assert "€" in deltas and all("\ufffd" not in d for d in deltas)


def test_cancel_stops_within_100_ms(engine, hf_tokenizer):
    token = CancelToken()
    never_end = Sampling(temperature=0.8, max_new_tokens=100000, seed=1)
    stop = [hf_tokenizer.convert_tokens_to_ids(t) for t in ("<|end|>", "<|endoftext|>")]

    def no_stop(_ids, scores):
        scores[stop] = -np.inf
        return scores

    stream = engine.generate("Child", QUESTION, sampling=never_end, cancel=token, logits_processor=no_stop)
    next(e for e in stream if isinstance(e, Text))
    token.cancel()
    cancelled_at = time.perf_counter()
    rest = list(stream)
    assert time.perf_counter() - cancelled_at < 0.1
    assert rest[-1].data["stopped"] == "cancelled"
    assert sum(isinstance(e, Text) for e in rest) <= 1


def test_answer_stops_when_the_context_is_full(engine, hf_tokenizer):
    stop = [hf_tokenizer.convert_tokens_to_ids(t) for t in ("<|end|>", "<|endoftext|>")]

    def no_stop(_ids, scores):
        scores[stop] = -np.inf
        return scores

    _, data = answer(engine, QUESTION, sampling=Sampling(max_new_tokens=100000, seed=3), logits_processor=no_stop)
    assert data["stopped"] == "length"
    assert data["prompt_tokens"] + len(data["token_ids"]) == engine.llm.n_ctx() - 1


def test_later_turns_reuse_the_cached_prefix(engine):
    turns = [Turn("user", "Tell me about bees.")]
    _, first = answer(engine, turns, sampling=GREEDY)
    turns += [Turn("assistant", first["text"]), Turn("user", "And honey?")]
    _, second = answer(engine, turns, sampling=GREEDY)
    # Everything up to the previous answer was already evaluated.
    assert second["cached_tokens"] >= first["prompt_tokens"]
    assert second["cached_tokens"] < second["prompt_tokens"]


def test_long_conversation_drops_oldest_turns_and_keeps_the_instruction(tiny_gguf):
    chat = ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=256, threads=2))
    turns = []
    for i in range(6):
        turns += [Turn("user", f"Question number {i} about gardening and vegetables?"),
                  Turn("assistant", "Plants need water, light and good soil to grow well. " * 2)]
    turns.append(Turn("user", "What about flowers?"))
    events = list(chat.generate("Farmer", turns, sampling=Sampling(temperature=0, max_new_tokens=32)))
    warning = [e for e in events if isinstance(e, Log)]
    data = events[-1].data
    assert warning and "left out" in warning[0].message
    assert data["dropped_turns"] >= 2 and data["prompt_tokens"] + 32 <= 256
    kept = turns[data["dropped_turns"]:]
    assert chat.prompt_ids("Farmer", kept) == chat.fit("Farmer", turns, None, 32)[0]
    text = chat.llm.detokenize(chat.prompt_ids("Farmer", kept)).decode()
    assert "make Farmer understand" in text
    with pytest.raises(PromptError, match="too long"):
        list(chat.generate("Farmer", [Turn("user", "word " * 400)], sampling=Sampling(max_new_tokens=32)))
    chat.close()


def test_seed_makes_sampling_repeatable(engine):
    sampling = Sampling(temperature=1.0, max_new_tokens=16, seed=42)
    _, a = answer(engine, QUESTION, sampling=sampling)
    _, b = answer(engine, QUESTION, sampling=sampling)
    _, c = answer(engine, QUESTION, sampling=Sampling(temperature=1.0, max_new_tokens=16, seed=7))
    assert a["token_ids"] == b["token_ids"] != c["token_ids"]


def test_defaults_suit_the_user_type():
    assert default_sampling("Child").max_new_tokens < default_sampling("Elderly").max_new_tokens
    assert default_sampling("Elderly").max_new_tokens < default_sampling("Software Developer").max_new_tokens


def test_bad_files_get_a_clear_message_before_llama_cpp(tmp_path, tiny_model):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(ModelError, match="damaged or truncated"):
        ChatEngine(bad)
    with pytest.raises(ModelError, match="not a GGUF"):
        ChatEngine(tiny_model / "config.json")
    with pytest.raises(ModelError, match="not found"):
        ChatEngine(tmp_path / "missing.gguf")


def test_adapters_apply_swap_and_scale_without_reloading(tiny_model, tiny_gguf, adapters, tmp_path):
    from converters.convert import convert_model

    lora = tmp_path / "all.gguf"
    for _ in convert_adapter(adapters["all"], lora, tiny_model):
        pass
    merged = tmp_path / "merged.gguf"
    for _ in convert_model(tiny_model, merged, "f32", adapter_dir=adapters["all"]):
        pass
    chat = ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=512, threads=2))
    _, base = answer(chat, QUESTION, sampling=GREEDY)
    chat.set_adapters([AdapterSpec(str(lora), 1.0)])
    _, tuned = answer(chat, QUESTION, sampling=GREEDY)
    reference = ChatEngine(merged, EngineSettings(context_length=512, threads=2))
    _, expected = answer(reference, QUESTION, sampling=GREEDY)
    reference.close()
    assert tuned["token_ids"] == expected["token_ids"] != base["token_ids"]
    assert tuned["cached_tokens"] == 0  # the prefix cache was reset with the swap
    chat.set_adapters([AdapterSpec(str(lora), 0.0)])
    _, off = answer(chat, QUESTION, sampling=GREEDY)
    assert off["token_ids"] == base["token_ids"]
    chat.set_adapters([])
    _, again = answer(chat, QUESTION, sampling=GREEDY)
    assert again["token_ids"] == base["token_ids"]
    with pytest.raises(ModelError, match="GGUF model, but a adapter was expected|is a GGUF model"):
        chat.set_adapters([AdapterSpec(str(merged))])
    chat.close()
    assert AdapterSpec.parse("a/b.gguf:0.5") == AdapterSpec("a/b.gguf", 0.5)
    assert AdapterSpec.parse("C:/x/b.gguf") == AdapterSpec("C:/x/b.gguf", 1.0)


def damaged_copies(source, folder):
    """21 damaged variants of a good GGUF: truncations, flipped header and tensor-info fields, foreign files."""
    import struct

    import gguf

    blob = source.read_bytes()
    reader = gguf.GGUFReader(source)
    first = reader.tensors[0]
    name = first.name.encode()
    at = blob.find(name, 24)  # the first tensor's info: name, n_dims, dims, type, offset
    dims_at = at + len(name) + 4
    type_at = dims_at + 8 * len(first.shape)

    def put(offset, value):
        changed = bytearray(blob)
        changed[offset:offset + len(value)] = value
        return bytes(changed)

    cases = {f"truncated-{fraction}": blob[: int(len(blob) * fraction)] for fraction in (0.0005, 0.01, 0.2, 0.5, 0.9)}
    cases.update({
        "truncated-after-magic": blob[:4],
        "truncated-before-data": blob[: reader.data_offset],
        "truncated-last-byte": blob[:-1],
        "version-99": put(4, struct.pack("<I", 99)),
        "tensor-count-huge": put(8, struct.pack("<Q", 2**40)),
        "kv-count-huge": put(16, struct.pack("<Q", 2**40)),
        "kv-count-zero": put(16, struct.pack("<Q", 0)),
        "magic-flipped": put(0, b"GGUX"),
        "tensor-name-length-huge": put(at - 8, struct.pack("<Q", 2**33)),
        "tensor-ndims-9": put(at + len(name), struct.pack("<I", 9)),
        "tensor-dim-doubled": put(dims_at, struct.pack("<Q", int(first.shape[0]) * 2)),
        "tensor-type-99": put(type_at, struct.pack("<I", 99)),
        "tensor-offset-beyond": put(type_at + 4, struct.pack("<Q", 2**40)),
        "empty": b"",
        "jpeg": b"\xff\xd8\xff\xe0" + b"\x00" * 5000,
        "text": b"hello, this is a text file\n" * 100,
    })
    paths = []
    for case, data in cases.items():
        path = folder / f"{case}.gguf"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_twenty_one_damaged_files_each_get_a_message(tiny_gguf, tmp_path):
    paths = damaged_copies(tiny_gguf[Variant.MINI_4K], tmp_path)
    assert len(paths) == 21
    for path in paths:
        with pytest.raises(ModelError) as raised:
            ChatEngine(path, EngineSettings(context_length=256, threads=1))
        message = str(raised.value)
        assert path.name in message and "Traceback" not in message, message
        assert any(words in message for words in ("damaged", "truncated", "not a GGUF", "empty", "could not load"))
    # The good file still loads afterwards: nothing was left in a bad state.
    ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=256, threads=1)).close()


# --- LongRoPE: which rope factors the engine runs with -----------------------------------------


def last_logits(chat, ids):
    chat.llm.reset()
    chat.llm.eval(ids)
    # llama-cpp-python keeps no scores without logits_all; llama.cpp has the last position's.
    return np.ctypeslib.as_array(chat.llm._ctx.get_logits(), shape=(chat.llm.n_vocab(),)).astype(np.float64)


def test_long_rope_model_stays_on_the_short_factors_unless_asked(tiny_models, tiny_gguf):
    from converters.verify import hf_logits

    model_dir = tiny_models[Variant.MINI_128K]
    original = 256  # the tiny 128k model's original context (like 4096 for Phi-3-mini-128k)
    plain = ChatEngine(tiny_gguf[Variant.MINI_128K], EngineSettings(context_length=1024, threads=2))
    longer = ChatEngine(tiny_gguf[Variant.MINI_128K], EngineSettings(context_length=1024, threads=2, long_context=True))
    try:
        assert plain.llm.n_ctx() <= original and "Longer memory" in plain.context_note
        assert longer.llm.n_ctx() == 1024 and "less exact" in longer.context_note
        ids = plain.prompt_ids("Elderly", QUESTION)
        reference = hf_logits(model_dir, ids)[-1]  # transformers: short factors for a short sequence
        scale = np.abs(reference).max()
        assert np.abs(last_logits(plain, ids) - reference).max() / scale < 1e-3
        # Across the threshold llama.cpp switches every token to the long factors.
        assert np.abs(last_logits(longer, ids) - reference).max() / scale > 1e-2
    finally:
        plain.close()
        longer.close()
    four_k = ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=1024, threads=2))
    try:
        assert four_k.llm.n_ctx() == 1024 and four_k.context_note == ""  # no LongRoPE, nothing capped
    finally:
        four_k.close()


def test_the_memory_cost_is_llama_cpps_own_cache_size(tiny_gguf):
    """kv_cache_bytes (what 'Longer memory…' quotes) agrees with the cache llama.cpp allocates."""
    import llama_cpp

    chat = ChatEngine(tiny_gguf[Variant.GQA], EngineSettings(context_length=512, threads=2))
    try:
        # The GQA model has fewer key/value heads than heads: the estimate must use the former.
        expected = llama_cpp.llama_state_get_size(chat.llm.ctx)
        chat.llm.eval(chat.prompt_ids("Child", QUESTION))
        filled = llama_cpp.llama_state_get_size(chat.llm.ctx) - expected
        per_token = chat.kv_cache_bytes(1)
        assert filled > 0 and abs(filled / len(chat.prompt_ids("Child", QUESTION)) - per_token) / per_token < 0.2
    finally:
        chat.close()
