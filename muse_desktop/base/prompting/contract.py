"""Turn (user type, instruction template, conversation) into prompt text, token ids and labels.

This is the only place that knows the MUsE prompt. The trainer's dataset code and
the chat engine both call :func:`build_pieces` and :func:`encode`, so the ids a
model is trained on are the ids it is later served (train/serve skew is how a
fine-tune "disappears" after export).

Single turn (byte for byte the public MUsE inference format)::

    <|user|>{instruction}\\n{question}<|end|>\\n<|assistant|>\\n

and for training the answer and ``<|end|>`` follow. Only the answer tokens and
the closing ``<|end|>`` are trained; every other label is -100.

Multi-turn: the instruction goes once, at the start of the *first user turn of
the window* sent to the model, and later user turns carry only their text::

    <|user|>{instruction}\\n{q1}<|end|>\\n<|assistant|>\\n{a1}<|end|>\\n<|user|>{q2}<|end|>\\n<|assistant|>\\n

Why there: the MUsE model was tuned with the instruction at the start of the user
message, so the first turn is exactly what it saw in training; repeating it in
every turn would cost ~25 tokens a turn for no new information; and because the
instruction belongs to the first turn *of the window*, dropping old turns when a
conversation outgrows the context keeps it (the caller passes the kept turns and
the instruction moves to the new first turn). Later user turns follow the same
``<|user|>text<|end|>`` shape as the first.

Token ids are built from the structure, never by parsing the rendered text: a
person who types ``<|end|>`` gets those characters as plain text, not the special
token. Whitespace directly after a special token other than ``<s>``, ``<unk>`` and
``<|endoftext|>`` is dropped, as Phi-3's tokenizer (``rstrip``) and llama.cpp
(for models named phi3) both do, so the newlines of the text above never become
tokens. Each remaining text run is encoded on its own by the tokenizer adapter
(:class:`TokenizerLike`) as plain text without BOS/EOS, which is what llama.cpp's
``tokenize(text, add_bos=False, special=False)`` does, dummy-prefix rule included.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from muse_desktop.base.errors import MuseError

DEFAULT_INSTRUCTION_TEMPLATE = (
    "You should adaptively use proper words and sentences to make {user_type} understand. "
    "Please include contexts familiar with {user_type}"
)
TEMPLATE_SLOT = "user_type"
IGNORE_INDEX = -100


class Special:
    """Phi-3 chat special tokens."""

    BOS = "<s>"
    EOS = "</s>"
    UNK = "<unk>"
    ENDOFTEXT = "<|endoftext|>"
    ASSISTANT = "<|assistant|>"
    SYSTEM = "<|system|>"
    END = "<|end|>"
    USER = "<|user|>"
    # Added tokens in Phi-3's vocabulary order (ids 32000..32010 in Phi-3-mini).
    PHI3_ADDED = (
        ENDOFTEXT,
        ASSISTANT,
        "<|placeholder1|>",
        "<|placeholder2|>",
        "<|placeholder3|>",
        "<|placeholder4|>",
        SYSTEM,
        END,
        "<|placeholder5|>",
        "<|placeholder6|>",
        USER,
    )
    # Specials after which Phi-3 keeps whitespace (all others strip it on the right).
    KEEP_WHITESPACE_AFTER = frozenset({BOS, EOS, UNK, ENDOFTEXT})
    # Tokens that end a generated answer.
    END_OF_GENERATION = (END, ENDOFTEXT)


class Role:
    USER = "user"
    ASSISTANT = "assistant"


class TrainOn:
    """Which tokens get labels."""

    ASSISTANT = "assistant"  # every assistant answer and its <|end|> (default)
    LAST = "last"  # only the final answer
    ALL = "all"  # everything (continued pre-training style)
    CHOICES = (ASSISTANT, LAST, ALL)


class PromptError(MuseError, ValueError):
    """The conversation cannot be turned into a prompt; the message says why."""

    exit_code = 2  # the command line: what was given cannot be used


class TemplateError(PromptError):
    """An instruction template that cannot be used; the message says why."""


class InstructionTemplate:
    """The user-editable instruction; ``{user_type}`` is its only (and required) slot."""

    def __init__(self, text: str = DEFAULT_INSTRUCTION_TEMPLATE):
        if not text or not text.strip():
            raise TemplateError("The instruction template is empty.")
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(
                f"The instruction template has unbalanced braces ({exc}). "
                "Write {user_type} where the user type goes; use {{ and }} for literal braces."
            ) from None
        names = set()
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name != TEMPLATE_SLOT or spec or conversion:
                shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise TemplateError(
                    f"The instruction template uses {shown}, which is not known. "
                    "The only placeholder is {user_type}."
                )
            names.add(name)
        if TEMPLATE_SLOT not in names:
            raise TemplateError(
                "The instruction template must contain {user_type}, where the user type goes."
            )
        self.text = text

    def render(self, user_type: str) -> str:
        if not user_type or not user_type.strip():
            raise PromptError("No user type was given.")
        return self.text.format(user_type=user_type)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstructionTemplate) and other.text == self.text

    def __repr__(self) -> str:
        return f"InstructionTemplate({self.text!r})"


@dataclass(frozen=True)
class Turn:
    role: str  # Role.USER or Role.ASSISTANT
    content: str


@dataclass(frozen=True)
class Piece:
    """One stretch of the prompt: a special token, or plain text."""

    text: str
    special: bool = False
    trained: bool = False


def _as_template(template: InstructionTemplate | str | None) -> InstructionTemplate:
    if template is None:
        return InstructionTemplate()
    if isinstance(template, InstructionTemplate):
        return template
    return InstructionTemplate(template)


def build_pieces(
    user_type: str | None,
    turns: Sequence[Turn],
    template: InstructionTemplate | str | None = None,
    *,
    add_generation_prompt: bool | None = None,
    train_on: str = TrainOn.ASSISTANT,
) -> list[Piece]:
    """The prompt as a list of pieces.

    ``turns`` alternate user/assistant and start with a user turn. When the last
    turn is the user's (a chat asking for an answer), the pieces end with
    ``<|assistant|>\\n``; when it is the assistant's (a training example), they end
    with its ``<|end|>``. ``add_generation_prompt`` may force either check.
    """
    if train_on not in TrainOn.CHOICES:
        raise PromptError(f"train_on must be one of {', '.join(TrainOn.CHOICES)}")
    if not turns:
        raise PromptError("The conversation is empty.")
    for index, turn in enumerate(turns):
        expected = Role.USER if index % 2 == 0 else Role.ASSISTANT
        if turn.role != expected:
            raise PromptError(
                f"Turn {index + 1} is from '{turn.role}' but should be from '{expected}': "
                "turns must alternate, starting with the user."
            )
    ends_with_user = turns[-1].role == Role.USER
    if add_generation_prompt is not None and add_generation_prompt != ends_with_user:
        raise PromptError(
            "A prompt for generation must end with a user turn"
            if add_generation_prompt
            else "A training example must end with an assistant turn"
        )
    # None (not "") means a dataset without user types: plain Phi-3 chat, no instruction.
    instruction = None if user_type is None else _as_template(template).render(user_type)
    last_index = len(turns) - 1
    pieces: list[Piece] = []
    for index, turn in enumerate(turns):
        if turn.role == Role.USER:
            text = f"{instruction}\n{turn.content}" if index == 0 and instruction is not None else turn.content
            pieces += [Piece(Special.USER, special=True), Piece(text), Piece(Special.END, special=True)]
            pieces.append(Piece("\n"))
        else:
            trained = train_on == TrainOn.ASSISTANT or (train_on == TrainOn.LAST and index == last_index)
            pieces += [
                Piece(Special.ASSISTANT, special=True),
                Piece("\n"),
                Piece(turn.content, trained=trained),
                Piece(Special.END, special=True, trained=trained),
            ]
            if index != last_index:
                pieces.append(Piece("\n"))
    if ends_with_user:
        pieces += [Piece(Special.ASSISTANT, special=True), Piece("\n")]
    if train_on == TrainOn.ALL:
        pieces = [Piece(p.text, p.special, True) for p in pieces]
    return pieces


def prompt_text(
    user_type: str,
    turns: Sequence[Turn],
    template: InstructionTemplate | str | None = None,
    **kwargs,
) -> str:
    """The exact text of the prompt (what ``--prompt-only`` shows)."""
    return "".join(piece.text for piece in build_pieces(user_type, turns, template, **kwargs))


class TokenizerLike(Protocol):
    """What :func:`encode` needs from a tokenizer (transformers' or llama.cpp's)."""

    bos_id: int | None
    add_bos: bool

    def special_id(self, token: str) -> int:
        """Id of a special token; raises KeyError if the vocabulary lacks it."""

    def encode_text(self, text: str) -> list[int]:
        """Ids of plain text: no BOS/EOS, special-token strings kept as text."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_count(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode(pieces: Sequence[Piece], tokenizer: TokenizerLike) -> Encoded:
    """Token ids and labels for ``pieces`` (labels are -100 where not trained)."""
    ids: list[int] = []
    labels: list[int] = []

    def put(new_ids: list[int], trained: bool) -> None:
        ids.extend(new_ids)
        labels.extend(new_ids if trained else [IGNORE_INDEX] * len(new_ids))

    if tokenizer.add_bos:
        if tokenizer.bos_id is None:
            raise PromptError("The tokenizer wants a BOS token but has none.")
        put([tokenizer.bos_id], False)

    strip_next = False
    # Merge neighbouring text pieces with the same label flag so that each run is
    # tokenized in one go, as it would be inside a longer string.
    runs: list[Piece] = []
    for piece in pieces:
        if runs and not piece.special and not runs[-1].special and runs[-1].trained == piece.trained:
            runs[-1] = Piece(runs[-1].text + piece.text, trained=piece.trained)
        else:
            runs.append(piece)
    for piece in runs:
        if piece.special:
            try:
                put([tokenizer.special_id(piece.text)], piece.trained)
            except KeyError:
                raise PromptError(f"The model's vocabulary has no {piece.text} token.") from None
            strip_next = piece.text not in Special.KEEP_WHITESPACE_AFTER
            continue
        text = piece.text.lstrip() if strip_next else piece.text
        if not text:
            continue
        strip_next = False
        put(tokenizer.encode_text(text), piece.trained)
    return Encoded(ids, labels)


def parse_prompt(text: str, template: InstructionTemplate | str | None = None) -> tuple[str, str]:
    """(user type, question) of a single-turn MUsE prompt, as :func:`prompt_text` renders it.

    For datasets that store the rendered prompt (MUsE's own does). The parse allows
    stray whitespace around the special tokens, so such a row is still understood;
    rendering the result again tells whether it was exactly the contract's prompt.
    """
    import re

    pattern = ""
    for literal, name, _spec, _conversion in string.Formatter().parse(_as_template(template).text):
        pattern += re.escape(literal)
        if name is not None:  # the first slot captures the user type, later ones must repeat it
            pattern += r"(?P=user_type)" if "(?P<user_type>" in pattern else r"(?P<user_type>.+?)"
    whole = (rf"\A{re.escape(Special.USER)}\s*{pattern}[ \t]*\r?\n?(?P<question>.*)"
             rf"{re.escape(Special.END)}\s*{re.escape(Special.ASSISTANT)}\s*\Z")
    match = re.match(whole, text, re.DOTALL)
    if match is None:
        raise PromptError("The text is not a MUsE prompt (<|user|>instruction\\nquestion<|end|>\\n<|assistant|>\\n).")
    return match["user_type"], match["question"]
