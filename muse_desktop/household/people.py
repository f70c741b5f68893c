"""A household on one computer: each person with their own settings, conversations and add-on model.

A person is a row in the store's ``profiles`` table. What is theirs:

- their settings (who they are, text size, colours, read-aloud voice and speed), kept
  in the profile;
- their own add-on model with its strength (the profile's ``adapter_path`` and
  ``adapter_scale``), applied on top of whatever the computer's model is;
- their conversations and preference records (``profile_id``);
- the add-on models made for them (library entries whose ``info["person"]`` is theirs).

The app-wide settings file keeps what belongs to the computer (the model file, the
MUsE add-on when MUsE is installed as one, threads, the caregiver's lock) and the
person last chosen (``Settings.person_id``). No Qt here: the pages call these.
"""

from __future__ import annotations

import copy
from pathlib import Path

from muse_desktop.household.settings import Settings
from muse_desktop.chat.store import Profile, Store, StoreError

# Settings that belong to a person, not to the computer. Who they are is also a profile
# column (what the list of people shows without opening JSON). The settings' own
# adapter_path stays the computer's (e.g. MUsE installed as an add-on).
COLUMNS = ("user_type_id", "custom_user_type")
PERSONAL = ("zoom_percent", "theme", "read_aloud", "voice_id", "reading_speed", "speech_sends")
FIRST_PERSON = "Me"  # the name given to the one person who used MUsE before it knew about people


class HouseholdError(StoreError):
    """A person cannot be made, found or removed; the message says why in plain words."""


def personal_settings(settings: Settings) -> dict:
    """What of ``settings`` belongs to the person using MUsE now."""
    return {name: getattr(settings, name) for name in PERSONAL}


def add_person(store: Store, name: str, settings: Settings, user_type_id: str = "",
               custom_user_type: str = "") -> Profile:
    """A new person, starting from the computer's current look (they change it later)."""
    name = " ".join(name.split())
    if not name:
        raise HouseholdError("Please type a name (or a nickname) for the new person.")
    if len(name) > 40:
        raise HouseholdError("Please use a shorter name (40 letters at most).")
    if any(person.name.casefold() == name.casefold() for person in store.profiles()):
        raise HouseholdError(f"Someone called {name} is already on this computer. "
                             "Please add a letter or a surname to tell them apart.")
    return store.create_profile(name, user_type_id=user_type_id, custom_user_type=custom_user_type,
                                settings=personal_settings(settings))


def remember(store: Store, person_id: int, settings: Settings) -> Profile:
    """Keep the person's part of ``settings`` with them (after they changed text size, voice, …)."""
    fields = {name: getattr(settings, name) for name in COLUMNS}
    return store.update_profile(person_id, settings=personal_settings(settings), **fields)


def switch_to(settings: Settings, person: Profile) -> Settings:
    """The settings with ``person``'s own part in place (a copy; the caller saves it)."""
    out = copy.deepcopy(settings)
    for name in COLUMNS:
        setattr(out, name, getattr(person, name))
    defaults = Settings()
    for name in PERSONAL:  # a damaged or hand-edited value falls back to the default
        default = getattr(defaults, name)
        value = person.settings.get(name, default)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        setattr(out, name, value if ok else default)
    out.person_id = person.id
    return out.validated()


def first_person(store: Store, settings: Settings) -> Profile | None:
    """Before people existed, everything belonged to the one person using MUsE: make them person one.

    Runs at every start and does nothing once anyone exists. When the computer has
    no people yet but has been used (a user type was chosen, or there are
    conversations or preferences), a person called "Me" is made from the current
    settings and given every conversation and preference record that belongs to
    nobody; nothing is lost or changed. Returns that person, or None.
    """
    if store.profiles():
        return None
    used = bool(settings.user_type_id or settings.custom_user_type or store.conversations() or store.preferences())
    if not used:
        return None
    person = store.create_profile(FIRST_PERSON, **{name: getattr(settings, name) for name in COLUMNS},
                                  settings=personal_settings(settings))
    store.adopt_unowned(person.id)
    return person


def owned_files(store: Store, person: Profile, data_root: Path) -> list[Path]:
    """Add-on model files made for ``person`` inside the app's own folder (what removing them deletes).

    A file elsewhere (one the person opened from their own folders) is never deleted.
    """
    root = data_root.resolve()
    paths = {Path(entry.path) for entry in store.library() if entry.info.get("person") == person.id}
    if person.adapter_path:
        paths.add(Path(person.adapter_path))
    inside = []
    for path in sorted(paths):
        try:
            path.resolve().relative_to(root)
        except ValueError:
            continue
        inside.append(path)
    return inside


def remove_person(store: Store, person_id: int, data_root: Path) -> list[Path]:
    """Remove a person and everything that is theirs; returns the files deleted.

    Their conversations (with messages), preference records, library entries for
    add-ons made for them, and those add-on files inside the app's folder go. The
    caller asks first. Files are deleted after the database no longer refers to them,
    so a crash in between leaves at worst an unused file, never a broken record.
    """
    try:
        person = store.profile(person_id)
    except StoreError:
        raise HouseholdError("That person is no longer on this computer.") from None
    files = owned_files(store, person, data_root)
    theirs = [entry.id for entry in store.library()
              if entry.info.get("person") == person.id or Path(entry.path) in files]
    store.delete_profile(person.id, library_ids=theirs)
    removed = []
    for path in files:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def attach_adapter(store: Store, person_id: int, path: str | Path, scale: float = 1.0) -> Profile:
    """Make ``path`` (a GGUF LoRA) the person's own add-on; "" takes it off."""
    if path and not Path(path).is_file():
        raise HouseholdError(f"The add-on {Path(path).name} is not there any more.")
    return store.update_profile(person_id, adapter_path=str(path), adapter_scale=float(scale))


def adapters_for(settings: Settings, person: Profile | None) -> list[tuple[str, float]]:
    """The add-ons the chat applies for ``person``: the computer's (e.g. MUsE's), then their own.

    Each as (path, scale); llama.cpp applies several at once, each with its scale.
    """
    out = []
    if settings.adapter_path:
        out.append((settings.adapter_path, settings.adapter_scale))
    if person is not None and person.adapter_path and person.adapter_path != settings.adapter_path:
        out.append((person.adapter_path, person.adapter_scale))
    return out




def find_person(store: Store, name: str) -> Profile:
    """The person called ``name`` (any capitals), or a HouseholdError naming who is there."""
    wanted = " ".join(name.split()).casefold()
    people = store.profiles()
    for person in people:
        if person.name.casefold() == wanted:
            return person
    names = ", ".join(person.name for person in people) or "nobody yet"
    raise HouseholdError(f"No one called {name} is on this computer (there is: {names}).")


def switch_in_place(settings: Settings, person: Profile) -> Settings:
    """:func:`switch_to`, written into ``settings`` itself (the pages of a window share one object)."""
    chosen = switch_to(settings, person)
    for name in (*COLUMNS, *PERSONAL, "person_id"):
        setattr(settings, name, getattr(chosen, name))
    return settings


def leave(settings: Settings) -> Settings:
    """Nobody chosen any more (the person in use was removed): the computer's settings stay."""
    settings.person_id = 0
    for name in COLUMNS:
        setattr(settings, name, "")
    return settings


def belongings(store: Store, person: Profile, data_root: Path) -> dict[str, int]:
    """What removing ``person`` deletes, counted for the question asked first."""
    return {"conversations": len(store.conversations(person.id)),
            "choices": len(store.preferences(person.id)),
            "add_ons": len(owned_files(store, person, data_root))}


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def removal_question(store: Store, person: Profile, data_root: Path) -> str:
    """The plain question asked before ``person`` is removed: what goes with them."""
    what = belongings(store, person, data_root)
    parts = []
    if what["conversations"]:
        parts.append(_count(what["conversations"], "conversation", "conversations"))
    if what["choices"]:
        parts.append(_count(what["choices"], "choice between answers", "choices between answers"))
    if what["add_ons"] > 1:
        parts.append(f"{what['add_ons']} add-ons made for them")
    elif what["add_ons"]:
        parts.append("their own add-on")  # a file they opened from their own folders is never deleted
    if not parts:
        goes = f"Nothing else is kept for {person.name}."
    else:
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        goes = f"Their {listed} will be deleted too."
    return f"Remove {person.name} from this computer?\n\n{goes} This cannot be undone."


def answering_text(model_name: str, person: Profile | None, adapter_paths: list[str]) -> str:
    """Which model answers, in plain words: "Answering: MUsE, with Grandma's own add-on"."""
    if person is None:
        return f"Answering: {model_name}"
    if person.adapter_path and person.adapter_path in adapter_paths:
        return f"Answering: {model_name}, with {person.name}'s own add-on"
    return f"Answering: {model_name} (no add-on of your own yet)"
