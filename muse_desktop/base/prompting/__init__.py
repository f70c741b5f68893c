"""The one prompt contract shared by the trainer and the chat engine."""

from muse_desktop.base.prompting.contract import (
    DEFAULT_INSTRUCTION_TEMPLATE,
    Encoded,
    InstructionTemplate,
    Piece,
    PromptError,
    Special,
    TemplateError,
    TokenizerLike,
    TrainOn,
    Turn,
    build_pieces,
    encode,
    prompt_text,
)

__all__ = [
    "DEFAULT_INSTRUCTION_TEMPLATE",
    "Encoded",
    "InstructionTemplate",
    "Piece",
    "PromptError",
    "Special",
    "TemplateError",
    "TokenizerLike",
    "TrainOn",
    "Turn",
    "build_pieces",
    "encode",
    "prompt_text",
]
