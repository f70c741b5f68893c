"""Several answers written together in one llama.cpp batch (issue 18): same tokens as one by one."""

from __future__ import annotations

import numpy as np
import pytest

from muse_desktop.chat.engine import ChatEngine, EngineSettings, Request, Sampling
from muse_desktop.models.demo_model import Variant
from muse_desktop.base.events import CancelToken, CandidateText, Done
from muse_desktop.base.prompting import Turn

GREEDY = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=24)
QUESTION = [Turn("user", "Why is a balanced diet important?")]
OTHER = [Turn("user", "Hi!"), Turn("assistant", "Hello, café 😀 friend."), Turn("user", "  And water?\n")]
# A near-tie: the two best logits closer than this may be swapped by batched arithmetic
# (other summation order in the matrix products); anything wider must match exactly.
NEAR_TIE = 1e-3


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    chat = ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=1024, threads=2))
    yield chat
    chat.close()


def run_batch(chat, requests, cancel=None):
    events = list(chat.generate_batch(requests, cancel=cancel))
    assert isinstance(events[-1], Done)
    return events, events[-1].data


def sequential(chat, request):
    """The same request through generate(), with the two best logits' gap at every step."""
    gaps = []

    def record(_ids, scores):
        top = np.sort(scores)[-2:]
        gaps.append(float(top[1] - top[0]))
        return scores

    done = list(chat.generate(request.user_type, request.turns, request.template, request.sampling,
                              logits_processor=record))[-1]
    return done.data["token_ids"], gaps


def test_greedy_candidates_match_sequential_generation_token_by_token(engine, capsys):
    requests = [Request("Elderly", QUESTION, sampling=GREEDY), Request("Elderly", QUESTION, sampling=GREEDY),
                Request(None, QUESTION, sampling=GREEDY), Request("Child", OTHER, sampling=GREEDY)]
    _events, data = run_batch(engine, requests)
    flips = 0
    for request, candidate in zip(requests, data["candidates"], strict=True):
        expected, gaps = sequential(engine, request)
        got = candidate["token_ids"]
        if got == expected:
            continue
        step = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b) if got[:len(expected)] != expected[:len(got)] \
            else min(len(got), len(expected))
        assert gaps[step] < NEAR_TIE, f"diverged at step {step} where the best logit led by {gaps[step]:.4f}"
        flips += 1
    with capsys.disabled():
        print(f"\nbatched vs sequential greedy: {flips} of {len(requests)} candidates flipped a near-tie")
    assert data["candidates"][0]["token_ids"] == data["candidates"][1]["token_ids"]
    assert all(len(c["token_ids"]) >= 20 or c["stopped"] == "end" for c in data["candidates"])


def test_a_shared_prompt_is_evaluated_once(engine):
    ids = engine.prompt_ids("Elderly", QUESTION)
    _events, data = run_batch(engine, [Request("Elderly", QUESTION, sampling=GREEDY)] * 4)
    # the first sequence evaluates the prompt, the other three only its last token (for their logits)
    assert data["evaluated_prompt_tokens"] == len(ids) + 3
    assert all(c["prompt_tokens"] == len(ids) for c in data["candidates"])


def test_each_sequence_has_its_own_settings_stops_and_stream(engine):
    end = sorted(engine.stop_ids)[0]
    varied = [Sampling(temperature=0.9, top_p=0.95, repeat_penalty=1.1, max_new_tokens=m, seed=s)
              for m, s in ((12, 1), (7, 2), (12, 1))]
    requests = [Request("Elderly", QUESTION, sampling=varied[0]), Request("Elderly", QUESTION, sampling=varied[1]),
                Request("Elderly", QUESTION, sampling=varied[2]),
                Request("Elderly", QUESTION, sampling=GREEDY, logit_bias={end: 1e9})]  # ends at once
    events, data = run_batch(engine, requests)
    first, second, third, ended = data["candidates"]
    assert len(first["token_ids"]) == 12 and len(second["token_ids"]) == 7
    assert first["token_ids"] == third["token_ids"]  # the same seed and settings: the same answer
    assert first["token_ids"][:7] != second["token_ids"]  # another seed: another answer
    assert ended["stopped"] == "end" and ended["token_ids"] == [] and ended["text"] == ""
    for index, candidate in enumerate(data["candidates"]):
        streamed = "".join(e.delta for e in events if isinstance(e, CandidateText) and e.index == index)
        assert streamed == candidate["text"]
    again = run_batch(engine, requests[:1])[1]["candidates"][0]
    assert again["token_ids"] == first["token_ids"]  # the seed repeats alone too


def test_cancel_stops_every_sequence(engine):
    token = CancelToken()
    endless = Sampling(temperature=0.8, max_new_tokens=100000, seed=3)
    forbid = {t: float("-inf") for t in engine.stop_ids}
    stream = engine.generate_batch([Request("Child", QUESTION, sampling=endless, logit_bias=forbid)] * 2, cancel=token)
    next(e for e in stream if isinstance(e, CandidateText))
    token.cancel()
    done = list(stream)[-1]
    assert [c["stopped"] for c in done.data["candidates"]] == ["cancelled", "cancelled"]
    # the chat's own context is untouched: a plain answer still works afterwards
    assert list(engine.generate("Elderly", QUESTION, sampling=GREEDY))[-1].data["token_ids"]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_the_native_sampler_loop_matches_llama_cpp_pythons_loop(engine, penalty):
    """generate() samples in C unless a logits processor needs Python; both give the same greedy tokens."""
    greedy = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=penalty, max_new_tokens=24)
    engine.llm.reset()
    native = list(engine.generate("Elderly", OTHER, sampling=greedy))[-1].data["token_ids"]
    engine.llm.reset()
    python = list(engine.generate("Elderly", OTHER, sampling=greedy, logits_processor=lambda _ids, s: s))[-1]
    assert native == python.data["token_ids"] and len(native) >= 20


def test_the_batch_starts_from_the_saved_instruction_prefix(tiny_gguf, tmp_path):
    """The chat's saved prefix serves the batch too (one file per sequence), with the same answers."""
    def fresh():
        return ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=1024, threads=2,
                                                                     prefix_state_dir=str(tmp_path)))

    requests = [Request("Elderly", QUESTION, sampling=GREEDY), Request("Child", OTHER, sampling=GREEDY)]
    plain = ChatEngine(tiny_gguf[Variant.MINI_4K], EngineSettings(context_length=1024, threads=2))
    expected = [c["token_ids"] for c in run_batch(plain, requests)[1]["candidates"]]
    plain.close()
    chat = fresh()
    list(chat.generate("Elderly", QUESTION, sampling=GREEDY))  # the chat saves the Elderly prefix
    elderly = len(chat.instruction_prefix("Elderly"))
    child = len(chat.instruction_prefix("Child"))
    chat.close()
    assert len(list(tmp_path.glob("*.seqstate"))) == 1
    batch = fresh()
    ids = [batch.prompt_ids(r.user_type, r.turns) for r in requests]
    _events, data = run_batch(batch, requests)
    # Elderly restored from the chat's file; Child evaluated (the start it shares with Elderly's
    # prompt copied) and saved for next time
    shared = batch.llm.longest_token_prefix(ids[0], ids[1])
    assert data["evaluated_prompt_tokens"] == (len(ids[0]) - elderly) + (len(ids[1]) - shared)
    assert [c["token_ids"] for c in data["candidates"]] == expected
    assert len(list(tmp_path.glob("*.seqstate"))) == 2
    _events, again = run_batch(batch, requests)
    assert again["evaluated_prompt_tokens"] == (len(ids[0]) - elderly) + (len(ids[1]) - child)
    assert [c["token_ids"] for c in again["candidates"]] == expected
    for state in tmp_path.glob("*.seqstate"):  # damaged: evaluated again, the same answers
        state.write_bytes(state.read_bytes()[:100])
    _events, damaged = run_batch(batch, requests)
    assert damaged["evaluated_prompt_tokens"] == len(ids[0]) + (len(ids[1]) - shared)
    assert [c["token_ids"] for c in damaged["candidates"]] == expected
    batch.close()


def test_the_four_candidates_are_a_core_function_the_page_only_shows(engine):
    """The research grid → requests → one batch → what the store keeps, without Qt."""
    import random

    from muse_desktop.evaluation.preferences import DEFAULT_GRID, Framing, candidate_records, candidate_requests

    requests = candidate_requests(DEFAULT_GRID, "Elderly", QUESTION, seeds=random.Random(7))
    assert [r.user_type for r in requests] == ["Elderly" if s.framing == Framing.MUSE else None for s in DEFAULT_GRID]
    assert [r.sampling.temperature for r in requests] == [s.temperature for s in DEFAULT_GRID]
    assert len({r.sampling.seed for r in requests}) == len(requests)  # each its own seed
    again = candidate_requests(DEFAULT_GRID, "Elderly", QUESTION, seeds=random.Random(7))
    assert [r.sampling.seed for r in again] == [r.sampling.seed for r in requests]
    _events, data = run_batch(engine, requests)
    records = candidate_records(data["candidates"], DEFAULT_GRID, requests)
    assert [(r["framing"], r["temperature"], r["seed"]) for r in records] == \
        [(s.framing, s.temperature, q.sampling.seed) for s, q in zip(DEFAULT_GRID, requests, strict=True)]
    assert all(r["text"] == c["text"].strip() for r, c in zip(records, data["candidates"], strict=True))
    # a worded-for-you cell answers what generate() with the same settings answers
    alone = list(engine.generate("Elderly", QUESTION, sampling=requests[1].sampling))[-1].data["token_ids"]
    assert alone == data["candidates"][1]["token_ids"]
    stopped = [dict(c, stopped="cancelled") if i == 2 else c for i, c in enumerate(data["candidates"])]
    assert candidate_records(stopped, DEFAULT_GRID, requests) is None
