"""The caregiver's commands: the lock (status, the deliberate reset) and kiosk mode with its scope guard."""

from __future__ import annotations

import argparse
from pathlib import Path

from muse_desktop.cli.common import CliError


def add_parsers(commands) -> None:
    lock_cmd = commands.add_parser("lock", help="the caregiver lock: where it is kept, or the deliberate reset")
    lock_cmd.add_argument("action", choices=["status", "reset"])
    lock_cmd.add_argument("--confirm", action="store_true", help="reset without asking to type RESET")
    lock_cmd.set_defaults(func=_cmd_lock)

    kiosk = commands.add_parser("kiosk", help="train the kiosk's scope guard, switch kiosk mode on or off")
    kiosk.add_argument("action", choices=["train", "on", "off", "check"])
    kiosk.add_argument("dataset", nargs="?", metavar="DATASET|QUESTION",
                       help="train: the dataset whose questions are in scope; check: a question")
    kiosk.add_argument("--topic", default="this topic", help="what the kiosk is about (used in the refusal)")
    kiosk.add_argument("--out-of-scope", metavar="FILE", help="off-topic questions, one per line "
                                                             "(default: the general set shipped with the app)")
    kiosk.set_defaults(func=_cmd_kiosk)

    people = commands.add_parser("people", help="who uses MUsE on this computer, with their conversations and choices")
    people.set_defaults(func=_cmd_people)


def _cmd_people(args: argparse.Namespace) -> int:
    from muse_desktop.chat.store import Store
    from muse_desktop.chat.usertypes import load_catalog

    store = Store()
    try:
        people = store.profiles()
        if not people:
            print("Nobody yet: the window's first page adds people.")
            return 0
        catalog = load_catalog()
        for person in people:
            known = catalog.get(person.user_type_id) if person.user_type_id else None
            who = person.custom_user_type or (known.display_name if known else person.user_type_id) or "-"
            add_on = f", own add-on {Path(person.adapter_path).name}" if person.adapter_path else ""
            print(f"{person.name:<20} {who:<24} {len(store.conversations(person.id))} conversations, "
                  f"{len(store.preferences(person.id))} choices{add_on}")
    finally:
        store.close()
    return 0


def _caregiver_check(settings, what: str) -> None:
    """With a PIN set, the command line asks for it too: it may do only what the window's caregiver menu may."""
    import getpass

    from muse_desktop.household import lock

    if not lock.has_pin(settings):
        return
    try:
        pin = getpass.getpass(f"Caregiver PIN (needed to {what}): ")
    except EOFError:
        pin = ""
    attempt = lock.try_pin(settings, pin)
    from muse_desktop.household.settings import save_settings

    save_settings(settings)  # the failure count and the wait, as in the window
    if not attempt.ok:
        raise CliError(attempt.message)


def _cmd_lock(args: argparse.Namespace) -> int:
    from muse_desktop.household import lock
    from muse_desktop.household.settings import load_settings

    loaded = load_settings()
    if args.action == "status":
        if loaded.problem:
            print(loaded.problem)
        state = "locked" if lock.is_locked(loaded.settings) else "open"
        print(f"A caregiver PIN is {'set' if lock.has_pin(loaded.settings) else 'not set'}; MUsE starts {state}.")
        for path in lock.lock_paths():
            print(f"  {path}{'' if path.exists() else ' (missing)'}")
        return 0
    # The deliberate reset: for a forgotten PIN or a damaged lock file. It has the power of
    # deleting MUsE's files, so it asks for the words to be typed, not a yes.
    if not args.confirm:
        print("This forgets the caregiver PIN and opens everything (settings, Trainer, kiosk mode).")
        try:
            typed = input("Type RESET to go on: ")
        except EOFError:
            typed = ""
        if typed.strip() != "RESET":
            raise CliError("nothing was changed")
    lock.reset_lock()
    print("The caregiver lock was reset: no PIN is set.")
    return 0


def _cmd_kiosk(args: argparse.Namespace) -> int:
    from muse_desktop.household.scope import MIN_F1, ScopeGuard, train_scope_guard
    from muse_desktop.household.settings import load_settings, save_settings

    settings = load_settings().settings
    if args.action in ("train", "on", "off"):
        _caregiver_check(settings, {"train": "train the kiosk guard", "on": "switch kiosk mode on",
                                    "off": "switch kiosk mode off"}[args.action])
    if args.action == "train":
        from muse_desktop.data.datasets import load_dataset

        if not args.dataset:
            raise CliError("kiosk train needs the dataset whose questions are in scope")
        report = load_dataset(args.dataset)
        questions = [e.turns[0].content if e.turns else e.text for e in report.examples]
        outside = None
        if args.out_of_scope:
            outside = Path(args.out_of_scope).read_text(encoding="utf-8").splitlines()
        result = train_scope_guard(questions, outside, topic=args.topic)
        print(result.summary())
        if not result.good_enough:  # the same gate as the window: a weak guard never replaces the live one
            raise CliError("not good enough to switch on (F1 below 0.8), so it was not saved: add more questions")
        path = result.guard.save()
        print(f"Saved to {path}. Good enough to switch on: muse-desktop kiosk on")
        return 0
    guard = ScopeGuard.load()
    if args.action == "on":
        if guard is None:
            raise CliError("train the kiosk guard first: muse-desktop kiosk train DATASET --topic TOPIC")
        if guard.metrics.get("f1", 0) < MIN_F1:
            raise CliError(f"the guard's held-out F1 is {guard.metrics.get('f1', 0):.2f} (below {MIN_F1}); "
                           "train it with more questions first")
        settings.kiosk_mode = True
    elif args.action == "off":
        settings.kiosk_mode = False
    elif args.action == "check":
        if guard is None:
            raise CliError("no kiosk guard has been trained")
        question = args.dataset or ""
        print("in scope" if guard.allows(question) else f"refused: {guard.refusal()}")
        return 0
    save_settings(settings)
    print(f"Kiosk mode is {'on' if settings.kiosk_mode else 'off'}.")
    return 0
