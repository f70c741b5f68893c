"""Does an adapter's tokenizer give the same token ids as its base's?

A fine-tune published with its own tokenizer files is only exact on the base if
those files mean the same thing: the same vocabulary, the same added tokens at the
same ids, the same bos/eos/pad. The GGUF is always converted with the base's
tokenizer, so a difference would silently feed the adapter other ids than it was
trained on. Only the meaning is compared, not the bytes: a tokenizer re-saved by
another transformers version writes the same facts in another form.

Works on the files' bytes (nothing is written to disk) and needs only sentencepiece.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from muse_desktop.base.errors import MuseError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model")
ROLES = ("bos_token", "eos_token", "pad_token")
SHOWN = 3  # differences named in a message


class TokenizerMismatch(MuseError, ValueError):
    """The two tokenizers differ; the message names how."""


@dataclass
class TokenizerFacts:
    vocab: dict[str, dict[int, str]] = field(default_factory=dict)  # source file -> id -> piece
    added: dict[int, str] = field(default_factory=dict)  # added tokens by id, from every file that lists them
    roles: dict[str, str | None] = field(default_factory=dict)  # bos/eos/pad, where a file states them

    @property
    def empty(self) -> bool:
        return not (self.vocab or self.added or self.roles)


def _json(files: Mapping[str, bytes], name: str):
    if name not in files:
        return None
    try:
        return json.loads(files[name].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise TokenizerMismatch(f"{name} is not readable JSON.") from None


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_facts(files: Mapping[str, bytes]) -> TokenizerFacts:
    """What the tokenizer files (name -> bytes) say about ids."""
    facts = TokenizerFacts()
    tokenizer_json = _json(files, "tokenizer.json")
    if isinstance(tokenizer_json, dict):
        vocab = (tokenizer_json.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            facts.vocab["tokenizer.json"] = {int(i): piece for piece, i in vocab.items()}
        elif isinstance(vocab, list):  # Unigram: [piece, score] pairs in id order
            facts.vocab["tokenizer.json"] = {i: entry[0] for i, entry in enumerate(vocab)}
        for token in tokenizer_json.get("added_tokens") or []:
            facts.added.setdefault(int(token["id"]), token["content"])
    if "tokenizer.model" in files:
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(files["tokenizer.model"])
        except (RuntimeError, OSError):
            raise TokenizerMismatch("tokenizer.model is not a sentencepiece model.") from None
        facts.vocab["tokenizer.model"] = {i: processor.id_to_piece(i) for i in range(processor.get_piece_size())}
    config = _json(files, "tokenizer_config.json")
    if isinstance(config, dict):
        for key, token in (config.get("added_tokens_decoder") or {}).items():
            facts.added.setdefault(int(key), _token_text(token))
        for role in ROLES:
            if role in config:
                facts.roles[role] = _token_text(config[role])
    added_json = _json(files, "added_tokens.json")
    if isinstance(added_json, dict):
        for token, token_id in added_json.items():
            facts.added.setdefault(int(token_id), token)
    special_map = _json(files, "special_tokens_map.json")
    if isinstance(special_map, dict):
        for role in ROLES:
            if role in special_map and role not in facts.roles:
                facts.roles[role] = _token_text(special_map[role])
    return facts


def _name(piece: str | None) -> str:
    return "nothing" if piece is None else repr(piece)


def differences(base: TokenizerFacts, other: TokenizerFacts) -> list[str]:
    """How ``other`` differs from ``base`` in what the model sees; empty when they agree."""
    found: list[str] = []
    # The vocabulary: compare the same file where both have it, else whatever each has.
    pairs = [(s, s) for s in other.vocab if s in base.vocab] or [(s, b) for s in other.vocab for b in base.vocab][:1]
    for mine, theirs in pairs:
        a, b = base.vocab[theirs], other.vocab[mine]
        if len(a) != len(b):
            found.append(f"its vocabulary ({mine}) has {len(b)} pieces, the base's has {len(a)}")
        changed = [i for i in sorted(set(a) & set(b)) if a[i] != b[i]]
        if changed:
            shown = ", ".join(f"id {i} is {b[i]!r} instead of {a[i]!r}" for i in changed[:SHOWN])
            found.append(f"{len(changed)} vocabulary pieces differ ({shown})")

    def token_at(facts: TokenizerFacts, token_id: int) -> str | None:
        if token_id in facts.added:
            return facts.added[token_id]
        return next((v[token_id] for v in facts.vocab.values() if token_id in v), None)

    moved = [(i, token_at(base, i), piece) for i, piece in sorted(other.added.items()) if token_at(base, i) != piece]
    if moved:
        shown = ", ".join(f"id {i} is {_name(new)} instead of {_name(old)}" for i, old, new in moved[:SHOWN])
        found.append(f"{len(moved)} added tokens differ ({shown})")
    missing = sorted(set(base.added) - set(other.added)) if other.added else []
    if missing:
        found.append(f"it lacks {len(missing)} of the base's added tokens (id {missing[0]} {base.added[missing[0]]!r})")
    for role in ROLES:
        if role in other.roles and other.roles[role] != base.roles.get(role):
            found.append(f"its {role.removesuffix('_token')} token is {_name(other.roles[role])}, "
                         f"the base's is {_name(base.roles.get(role))}")
    return found


def _read(files: Mapping[str, bytes], what: str) -> TokenizerFacts:
    try:
        return read_facts(files)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if isinstance(exc, TokenizerMismatch):
            raise
        raise TokenizerMismatch(f"The tokenizer files of {what} are not laid out as tokenizers are "
                                f"({type(exc).__name__}: {exc}), so they cannot be compared; it is not used.") from None


def check_same_tokenizer(base_files: Mapping[str, bytes], other_files: Mapping[str, bytes], what: str,
                         base_what: str) -> None:
    """Raise :class:`TokenizerMismatch` naming the differences when ``other`` would give other ids."""
    found = differences(_read(base_files, base_what), _read(other_files, what))
    if found:
        raise TokenizerMismatch(
            f"{what} comes with a tokenizer that differs from {base_what}'s: " + "; ".join(found) + ". "
            "Its answers would be built from other token ids than it was trained on, so it is not used."
        )
