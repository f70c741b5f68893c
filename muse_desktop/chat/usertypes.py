"""The user-type catalog: who the person is, and the words the prompt uses for it.

The catalog is a data file (``resources/user_types.tsv``), not code. Each entry
has a stable id (profiles store it), the name the picker shows, the exact form
put into the MUsE instruction, its group and a short plain-language description.
People may also type their own user type; :func:`custom_user_type` checks it.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from muse_desktop.base.errors import MuseError
from muse_desktop.base.paths import resource

CATALOG_FILE = "user_types.tsv"
COLUMNS = ("id", "display_name", "prompt_name", "group", "description")
CUSTOM_GROUP = "Custom"
CUSTOM_MAX_CHARS = 60


class CatalogError(MuseError, ValueError):
    """The catalog file is malformed."""


class InvalidUserType(MuseError, ValueError):
    """A user type typed by the person cannot be used; the message says why."""

    exit_code = 2  # the command line: what was given cannot be used


@dataclass(frozen=True)
class UserType:
    id: str
    display_name: str
    prompt_name: str
    group: str
    description: str

    @property
    def is_custom(self) -> bool:
        return self.group == CUSTOM_GROUP


def fold(text: str) -> str:
    """Case- and accent-insensitive form of ``text`` used for matching."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


class Catalog:
    """All known user types, in file order, with lookup and search."""

    def __init__(self, types: Iterable[UserType]):
        self.types: list[UserType] = list(types)
        self._by_id: dict[str, UserType] = {}
        for user_type in self.types:
            if user_type.id in self._by_id:
                raise CatalogError(f"duplicate user type id '{user_type.id}'")
            self._by_id[user_type.id] = user_type
        self._folded = [
            (fold(t.display_name), fold(t.prompt_name), fold(f"{t.group} {t.description}"))
            for t in self.types
        ]

    def __len__(self) -> int:
        return len(self.types)

    def __iter__(self):
        return iter(self.types)

    def get(self, type_id: str) -> UserType | None:
        return self._by_id.get(type_id)

    def groups(self) -> list[str]:
        """Group names in the order they first appear."""
        return list(dict.fromkeys(t.group for t in self.types))

    def by_prompt_name(self, name: str) -> UserType | None:
        wanted = fold(name)
        for user_type, (_, prompt, _) in zip(self.types, self._folded, strict=True):
            if prompt == wanted:
                return user_type
        return None

    def search(self, text: str, limit: int | None = None) -> list[UserType]:
        """Types matching ``text``, best first.

        Ranking: exact name, name prefix, prefix of a word in the name, substring
        of the name, then a match in the group or description. Empty text matches
        everything in catalog order.
        """
        query = fold(text)
        if not query:
            return self.types[:limit] if limit else list(self.types)
        ranked: list[tuple[int, int, UserType]] = []
        for index, (user_type, (display, prompt, other)) in enumerate(zip(self.types, self._folded, strict=True)):
            rank = None
            for name in (display, prompt):
                if name == query:
                    rank = 0
                elif name.startswith(query):
                    rank = 1 if rank is None else min(rank, 1)
                elif any(word.startswith(query) for word in name.replace("-", " ").split()):
                    rank = 2 if rank is None else min(rank, 2)
                elif query in name:
                    rank = 3 if rank is None else min(rank, 3)
            if rank is None and query in other:
                rank = 4
            if rank is not None:
                ranked.append((rank, index, user_type))
        ranked.sort(key=lambda item: (item[0], item[1]))
        found = [user_type for _, _, user_type in ranked]
        return found[:limit] if limit else found


def parse_catalog(lines: Iterable[str], source: str = CATALOG_FILE) -> Catalog:
    """Parse the tab-separated catalog; '#' lines are comments, the first row is the header."""
    types: list[UserType] = []
    header_seen = False
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        cells = [cell.strip() for cell in line.split("\t")]
        if not header_seen:
            if tuple(cells) != COLUMNS:
                raise CatalogError(f"{source}:{number}: header must be {'/'.join(COLUMNS)}")
            header_seen = True
            continue
        if len(cells) != len(COLUMNS) or not all(cells):
            raise CatalogError(f"{source}:{number}: expected {len(COLUMNS)} non-empty columns")
        types.append(UserType(*cells))
    if not types:
        raise CatalogError(f"{source}: no user types found")
    return Catalog(types)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load a catalog file (the shipped one by default, cached)."""
    if path is None:
        return _shipped_catalog()
    with open(path, encoding="utf-8") as handle:
        return parse_catalog(handle, source=str(path))


@functools.lru_cache(maxsize=1)
def _shipped_catalog() -> Catalog:
    path = resource(CATALOG_FILE)
    with open(path, encoding="utf-8") as handle:
        return parse_catalog(handle, source=str(path))


def custom_user_type(text: str) -> UserType:
    """A user type typed by the person, after checking it.

    Refused: empty text, control characters, more than ``CUSTOM_MAX_CHARS``
    characters, and chat-markup such as ``<|end|>`` (which would look like the
    model's own structure).
    """
    name = " ".join(text.split())
    if not name:
        raise InvalidUserType("Please type who you are, for example 'Beekeeper'.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in text if ch not in " \t"):
        raise InvalidUserType("The user type contains invisible control characters; please retype it.")
    if len(name) > CUSTOM_MAX_CHARS:
        raise InvalidUserType(
            f"Please keep the user type to {CUSTOM_MAX_CHARS} characters or fewer "
            f"(it has {len(name)})."
        )
    if "<|" in name or "|>" in name:
        raise InvalidUserType("The user type cannot contain '<|' or '|>'.")
    slug = "".join(ch if ch.isalnum() else "-" for ch in fold(name)).strip("-")
    return UserType(
        id=f"custom:{slug}",
        display_name=name,
        prompt_name=name,
        group=CUSTOM_GROUP,
        description="A user type you typed yourself",
    )
