"""The evaluated instruction prefix kept on disk as llama.cpp state (issue 18)."""

from __future__ import annotations

from muse_desktop.chat.engine import ChatEngine, EngineSettings, Sampling
from muse_desktop.models.demo_model import Variant
from muse_desktop.base.events import Done, Log
from muse_desktop.base.prompting import Turn

GREEDY = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=16)
QUESTION = [Turn("user", "Why is a balanced diet important?")]


def fresh(tiny_gguf, state_dir):
    return ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=1024, threads=2,
                                                                 prefix_state_dir=str(state_dir)))


def ask(chat, user_type="Elderly"):
    events = list(chat.generate(user_type, QUESTION, sampling=GREEDY))
    assert isinstance(events[-1], Done)
    return events[-1].data, [e for e in events if isinstance(e, Log) and e.level == "warning"]


def test_a_new_engine_restores_the_prefix_and_answers_the_same(tiny_gguf, tmp_path):
    first = fresh(tiny_gguf, tmp_path)
    expected, _ = ask(first)
    prefix = first.instruction_prefix("Elderly")
    first.close()
    assert expected["cached_tokens"] == len(prefix)  # evaluated, then saved
    assert len(list(tmp_path.glob("*.seqstate"))) == 1 and len(list(tmp_path.glob("*.sha256"))) == 1
    second = fresh(tiny_gguf, tmp_path)
    got, warnings = ask(second)
    assert not warnings and got["cached_tokens"] == len(prefix) > 10
    assert got["token_ids"] == expected["token_ids"]
    other, _ = ask(fresh(tiny_gguf, tmp_path), "Child")  # another user type: another file
    assert len(list(tmp_path.glob("*.seqstate"))) == 2
    second.close()


def test_a_damaged_state_file_is_ignored_with_a_note(tiny_gguf, tmp_path):
    chat = fresh(tiny_gguf, tmp_path)
    expected, _ = ask(chat)
    chat.close()
    state = next(tmp_path.glob("*.seqstate"))
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the cache data
    state.write_bytes(bytes(data))
    chat = fresh(tiny_gguf, tmp_path)
    got, warnings = ask(chat)
    assert len(warnings) == 1 and "was not used: its checksum does not match" in warnings[0].message
    assert got["token_ids"] == expected["token_ids"]
    chat.close()
    again, warnings = ask(fresh(tiny_gguf, tmp_path))  # made again: trusted from now on
    assert not warnings and again["token_ids"] == expected["token_ids"]


def test_a_truncated_state_file_with_a_matching_checksum_is_not_trusted(tiny_gguf, tmp_path):
    import hashlib

    chat = fresh(tiny_gguf, tmp_path)
    expected, _ = ask(chat)
    chat.close()
    state = next(tmp_path.glob("*.seqstate"))
    state.write_bytes(state.read_bytes()[:200])
    state.with_suffix(".sha256").write_text(hashlib.sha256(state.read_bytes()).hexdigest())
    chat = fresh(tiny_gguf, tmp_path)
    got, warnings = ask(chat)
    assert len(warnings) == 1 and "could not read it back" in warnings[0].message
    assert got["token_ids"] == expected["token_ids"]
    chat.close()
