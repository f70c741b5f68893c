"""The prompt contract: exact MUsE text, labels, and ids equal to independent tokenizations."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from muse_desktop.base.prompting import (
    DEFAULT_INSTRUCTION_TEMPLATE,
    InstructionTemplate,
    PromptError,
    Special,
    TemplateError,
    TrainOn,
    Turn,
    build_pieces,
    encode,
    prompt_text,
)
from muse_desktop.base.prompting.contract import IGNORE_INDEX
from muse_desktop.base.prompting.hf import HFTokenizer

QUESTION = "Why is a balanced diet important?"
ANSWER = "Food is like fuel for a car: with the right mix, everything runs smoothly."

# Written out by hand from the public MUsE inference code, not built
# from the module's own constants, so that a change to either is caught.
MUSE_ELDERLY = (
    "<|user|>You should adaptively use proper words and sentences to make Elderly understand. "
    "Please include contexts familiar with Elderly\n"
    "Why is a balanced diet important?<|end|>\n<|assistant|>\n"
)


def user(text):
    return Turn("user", text)


def assistant(text):
    return Turn("assistant", text)


def test_single_turn_prompt_is_the_muse_format_byte_for_byte():
    assert prompt_text("Elderly", [user(QUESTION)]) == MUSE_ELDERLY
    assert prompt_text("Elderly", [user(QUESTION)]).encode("utf-8") == MUSE_ELDERLY.encode("utf-8")


def test_training_text_appends_answer_and_end():
    text = prompt_text("Elderly", [user(QUESTION), assistant(ANSWER)])
    assert text == MUSE_ELDERLY + ANSWER + "<|end|>"


def test_other_user_type_goes_into_both_slots():
    text = prompt_text("Flight Attendant", [user("What is jet lag?")])
    assert text.count("Flight Attendant") == 2
    assert "make Flight Attendant understand" in text
    assert "familiar with Flight Attendant\nWhat is jet lag?" in text


def test_multi_turn_puts_instruction_only_in_first_user_turn():
    turns = [user("Q1"), assistant("A1"), user("Q2"), assistant("A2"), user("Q3")]
    text = prompt_text("Child", turns)
    instruction = DEFAULT_INSTRUCTION_TEMPLATE.format(user_type="Child")
    assert text == (
        f"<|user|>{instruction}\nQ1<|end|>\n<|assistant|>\nA1<|end|>\n"
        "<|user|>Q2<|end|>\n<|assistant|>\nA2<|end|>\n"
        "<|user|>Q3<|end|>\n<|assistant|>\n"
    )
    # A window that starts later keeps the instruction in its own first turn.
    assert prompt_text("Child", turns[2:]).startswith(f"<|user|>{instruction}\nQ2<|end|>")


def test_labels_mask_every_prompt_token_and_keep_answer_and_end(hf_tokenizer):
    tok = HFTokenizer(hf_tokenizer)
    prompt = encode(build_pieces("Elderly", [user(QUESTION)]), tok)
    full = encode(build_pieces("Elderly", [user(QUESTION), assistant(ANSWER)]), tok)
    n = len(prompt.input_ids)
    # What chat sends for generation is exactly the prompt part of a training row.
    assert full.input_ids[:n] == prompt.input_ids
    assert all(label == IGNORE_INDEX for label in full.labels[:n])
    assert full.labels[n:] == full.input_ids[n:]
    assert full.labels[-1] == hf_tokenizer.convert_tokens_to_ids("<|end|>")
    answer_ids = hf_tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    assert full.labels[n:-1] == answer_ids
    assert hf_tokenizer.decode(full.labels[n:], skip_special_tokens=False).strip() == ANSWER + "<|end|>"


@pytest.mark.parametrize(
    "turns",
    [
        [user(QUESTION)],
        [user(QUESTION), assistant(ANSWER)],
        [user("Hello!"), assistant("Hi, how can I help?"), user("Tell me about bees 🐝"), assistant("They make honey, café-style.")],
        [user("  leading spaces"), assistant("\n\nleading newlines")],
    ],
)
def test_ids_equal_transformers_tokenizing_the_whole_text(hf_tokenizer, turns):
    """An independent computation: transformers tokenizing the full prompt string."""
    encoded = encode(build_pieces("Elderly", turns), HFTokenizer(hf_tokenizer))
    assert encoded.input_ids == hf_tokenizer(prompt_text("Elderly", turns))["input_ids"]


def test_text_runs_match_the_sentencepiece_library(tiny_model, hf_tokenizer):
    """A second independent tokenizer implementation (sentencepiece itself)."""
    sp = spm.SentencePieceProcessor(model_file=str(tiny_model / "tokenizer.model"))
    encoded = encode(build_pieces("Nurse", [user(QUESTION), assistant(ANSWER)]), HFTokenizer(hf_tokenizer))
    specials = {hf_tokenizer.convert_tokens_to_ids(t) for t in Special.PHI3_ADDED} | {hf_tokenizer.bos_token_id}
    runs, current = [], []
    for token_id in encoded.input_ids:
        if token_id in specials:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(token_id)
    instruction = DEFAULT_INSTRUCTION_TEMPLATE.format(user_type="Nurse")
    assert runs[0] == sp.encode(f"{instruction}\n{QUESTION}")
    assert runs[1] == sp.encode(ANSWER)


def test_whitespace_after_special_tokens_never_becomes_tokens(hf_tokenizer):
    encoded = encode(build_pieces("Elderly", [user(QUESTION), assistant(ANSWER)]), HFTokenizer(hf_tokenizer))
    tokens = hf_tokenizer.convert_ids_to_tokens(encoded.input_ids)
    # The text holds three newlines; only the one between instruction and question is content.
    assert prompt_text("Elderly", [user(QUESTION), assistant(ANSWER)]).count("\n") == 3
    assert tokens.count("<0x0A>") == 1


def test_user_text_that_looks_like_a_special_token_stays_text(hf_tokenizer):
    tok = HFTokenizer(hf_tokenizer)
    end_id = tok.special_id("<|end|>")
    encoded = encode(build_pieces("Child", [user("what does <|end|> mean?")]), tok)
    assert encoded.input_ids.count(end_id) == 1  # only the structural one


def test_train_on_choices(hf_tokenizer):
    tok = HFTokenizer(hf_tokenizer)
    turns = [user("Q1"), assistant("A1"), user("Q2"), assistant("A2")]
    end_id = tok.special_id("<|end|>")
    every = encode(build_pieces("Child", turns), tok)
    last = encode(build_pieces("Child", turns, train_on=TrainOn.LAST), tok)
    everything = encode(build_pieces("Child", turns, train_on=TrainOn.ALL), tok)
    assert every.input_ids == last.input_ids == everything.input_ids
    assert [label for label in every.labels if label == end_id] == [end_id, end_id]
    assert [label for label in last.labels if label == end_id] == [end_id]
    assert last.trained_count < every.trained_count < everything.trained_count
    # BOS is never a label, even when training on everything.
    assert everything.labels[0] == IGNORE_INDEX and everything.labels[1:] == everything.input_ids[1:]


class NoBosTokenizer:
    bos_id = 1
    add_bos = False

    def special_id(self, token):
        return {"<|user|>": 10, "<|end|>": 11, "<|assistant|>": 12}[token]

    def encode_text(self, text):
        return [ord(ch) for ch in text]


def test_bos_follows_the_tokenizer_and_missing_specials_are_reported():
    encoded = encode(build_pieces("Child", [user("hi")], "{user_type}!"), NoBosTokenizer())
    assert encoded.input_ids == [10] + [ord(c) for c in "Child!\nhi"] + [11, 12]

    class Broken(NoBosTokenizer):
        def special_id(self, token):
            raise KeyError(token)

    with pytest.raises(PromptError, match="no <\\|user\\|> token"):
        encode(build_pieces("Child", [user("hi")]), Broken())


@pytest.mark.parametrize(
    "turns, message",
    [
        ([], "empty"),
        ([assistant("A")], "should be from 'user'"),
        ([user("Q"), user("Q2")], "should be from 'assistant'"),
    ],
)
def test_bad_conversations_are_refused(turns, message):
    with pytest.raises(PromptError, match=message):
        build_pieces("Child", turns)


def test_generation_and_training_shapes_are_checked():
    with pytest.raises(PromptError, match="must end with a user turn"):
        build_pieces("Child", [user("Q"), assistant("A")], add_generation_prompt=True)
    with pytest.raises(PromptError, match="must end with an assistant turn"):
        build_pieces("Child", [user("Q")], add_generation_prompt=False)
    with pytest.raises(PromptError, match="No user type"):
        build_pieces("  ", [user("Q")])


def test_custom_template_is_used():
    template = InstructionTemplate("Explain it for a {user_type}, please. {{Be kind}}")
    text = prompt_text("Farmer", [user("What is rain?")], template)
    assert text == "<|user|>Explain it for a Farmer, please. {Be kind}\nWhat is rain?<|end|>\n<|assistant|>\n"
    assert prompt_text("Farmer", [user("What is rain?")], template.text) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("Explain it simply.", "must contain \\{user_type\\}"),
        ("For {user_type} and {audience}", "\\{audience\\}, which is not known"),
        ("For {user_type:>10}", "\\{user_type:>10\\}, which is not known"),
        ("For {user_type!r}", "\\{user_type!r\\}, which is not known"),
        ("For {user_type", "unbalanced braces"),
        ("For user_type}", "unbalanced braces"),
        ("For {0} {user_type}", "\\{0\\}, which is not known"),
    ],
)
def test_invalid_templates_are_refused_clearly(text, message):
    with pytest.raises(TemplateError, match=message):
        InstructionTemplate(text)
