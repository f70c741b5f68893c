"""Talking from the command line: the user types, and one question answered by a GGUF model."""

from __future__ import annotations

import argparse
import sys


def add_parsers(commands) -> None:
    user_types = commands.add_parser("user-types", help="list or search the user types")
    user_types.add_argument("--search", metavar="TEXT", help="match names, ignoring case and accents")
    user_types.add_argument("--group", metavar="GROUP", help="only types whose group contains GROUP")
    user_types.add_argument("--limit", type=int, metavar="N", help="show at most N types")
    user_types.set_defaults(func=_cmd_user_types)

    chat = commands.add_parser("chat", help="answer one question with a GGUF model and exit")
    chat.add_argument("question")
    chat.add_argument("--model", metavar="M.gguf", required=True)
    chat.add_argument("--adapter", metavar="A.gguf[:SCALE]", action="append", default=[],
                      help="a GGUF LoRA adapter applied at run time (repeatable)")
    chat.add_argument("--user-type", metavar="T", default="adult", help="id, prompt form or name (default: adult)")
    chat.add_argument("--max-tokens", type=int, metavar="N")
    chat.add_argument("--temperature", type=float, metavar="T")
    chat.add_argument("--seed", type=int, metavar="S")
    chat.add_argument("--threads", type=int, metavar="N")
    chat.add_argument("--context", type=int, default=4096, metavar="N", help="context length (default 4096)")
    chat.add_argument("--long-context", action="store_true",
                      help="LongRoPE models: allow --context past the original context (less exact answers)")
    chat.add_argument("--prompt-only", action="store_true", help="print the exact prompt text instead of answering")
    chat.set_defaults(func=_cmd_chat)


def _cmd_user_types(args: argparse.Namespace) -> int:
    from muse_desktop.chat.usertypes import load_catalog

    catalog = load_catalog()
    found = catalog.search(args.search or "")
    if args.group:
        wanted = args.group.casefold()
        found = [t for t in found if wanted in t.group.casefold()]
    if args.limit:
        found = found[: args.limit]
    if not found:
        print(f"No user type matches '{args.search}'. You can type your own in the app.")
        return 1
    width = max(len(t.id) for t in found)
    for user_type in found:
        print(f"{user_type.id:<{width}}  {user_type.prompt_name}  [{user_type.group}]  {user_type.description}")
    if sys.stdout.isatty():
        print(f"\n{len(found)} of {len(catalog)} user types", file=sys.stderr)
    return 0


def resolve_user_type(text: str):
    """A catalog type by id, prompt form or name; otherwise a checked custom type."""
    from muse_desktop.chat.usertypes import custom_user_type, fold, load_catalog

    catalog = load_catalog()
    found = catalog.get(text) or catalog.by_prompt_name(text)
    if found is None:
        matches = [t for t in catalog.search(text) if fold(t.display_name) == fold(text)]
        found = matches[0] if matches else None
    if found is not None:
        return found
    return custom_user_type(text)


def _cmd_chat(args: argparse.Namespace) -> int:
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings, default_sampling
    from muse_desktop.base.events import Done, Log, Text
    from muse_desktop.base.prompting import Turn, prompt_text
    from muse_desktop.household.settings import load_settings

    user_type = resolve_user_type(args.user_type)
    turns = [Turn("user", args.question)]
    settings = load_settings().settings
    template = settings.instruction_template or None
    if not args.prompt_only:
        from muse_desktop.household.scope import check_question

        verdict = check_question(args.question, settings.kiosk_mode)  # the window's check, here too
        if not verdict.allowed:
            if verdict.problem:
                print(verdict.problem, file=sys.stderr)
            print(verdict.refusal)
            return 0
    if args.prompt_only:
        sys.stdout.write(prompt_text(user_type.prompt_name, turns, template, add_generation_prompt=True))
        return 0
    sampling = default_sampling(user_type.prompt_name)
    for name in ("max_tokens", "temperature", "seed"):
        value = getattr(args, name)
        if value is not None:
            setattr(sampling, "max_new_tokens" if name == "max_tokens" else name, value)
    engine = ChatEngine(args.model, EngineSettings(threads=args.threads or 0, context_length=args.context,
                                                   long_context=args.long_context),
                        [AdapterSpec.parse(a) for a in args.adapter])
    if engine.context_note:
        print(engine.context_note, file=sys.stderr)
    for event in engine.generate(user_type.prompt_name, turns, template, sampling):
        if isinstance(event, Text):
            sys.stdout.write(event.delta)
            sys.stdout.flush()
        elif isinstance(event, Log):
            print(event.message, file=sys.stderr)
        elif isinstance(event, Done):
            print()
    engine.close()
    return 0
