"""Training data from the command line: download a dataset, build one from documents, augment, export preferences."""

from __future__ import annotations

import argparse

from muse_desktop.cli.common import CliError, run_events
from muse_desktop.base.errors import MuseError


def add_parsers(commands) -> None:
    data = commands.add_parser("get-dataset", help="download a dataset repository (default: the MUsE data) "
                                                   "and check it")
    data.add_argument("repo", nargs="?", default="seohyunqkr/MUsE", metavar="OWNER/NAME")
    data.add_argument("--endpoint", metavar="URL", help="the hub (default: $MUSE_HUB_ENDPOINT or huggingface.co)")
    data.add_argument("--revision", default="main", metavar="COMMIT", help="the commit or branch (default: main)")
    data.add_argument("--out", metavar="DIR", help="where it goes (default: the app's datasets folder)")
    data.add_argument("--top", type=int, default=10, metavar="N", help="show the N most common user types")
    data.set_defaults(func=_cmd_get_dataset)

    build = commands.add_parser("build-data", help="documents → MUsE question/answer pairs written by a teacher")
    build.add_argument("folder", metavar="FOLDER", help="a folder of .txt, .md and .html documents")
    build.add_argument("--user-types", default="Child,Elderly", help="comma-separated (default: Child,Elderly)")
    build.add_argument("--out", required=True, metavar="OUT.jsonl", help="appended to; a rerun continues")
    add_teacher_arguments(build)
    build.add_argument("--chunk-chars", type=int, default=1500)
    build.set_defaults(func=_cmd_build_data)

    augment = commands.add_parser("augment", help="self-instruct: more pairs in the style of a few seeds")
    augment.add_argument("seeds", metavar="SEEDS.jsonl")
    augment.add_argument("--count", type=int, default=20, help="how many candidates to ask for")
    augment.add_argument("--threshold", type=float, default=0.7, help="ROUGE-L above this is a near-duplicate")
    augment.add_argument("--out", required=True, metavar="OUT.jsonl", help="the kept candidates, for review")
    add_teacher_arguments(augment)
    augment.set_defaults(func=_cmd_augment)

    prefs = commands.add_parser("preferences", help="export what people preferred: instruction data, DPO pairs")
    prefs.add_argument("action", choices=["export"])
    prefs.add_argument("--instructions", metavar="OUT.jsonl", help="question → best answer (MUsE triples)")
    prefs.add_argument("--pairs", metavar="OUT.jsonl", help="chosen = best, rejected = worst (for dpo_pairs)")
    prefs.add_argument("--person", metavar="NAME", help="only this person's choices (see `muse-desktop people`)")
    prefs.set_defaults(func=_cmd_preferences)


def _cmd_get_dataset(args: argparse.Namespace) -> int:
    from muse_desktop.data.datasets import load_dataset
    from muse_desktop.data.getdataset import get_dataset
    from muse_desktop.household.settings import load_settings

    loaded = load_settings().settings
    done = run_events(get_dataset(args.repo, args.out, args.endpoint or loaded.hub_endpoint or None, args.revision))
    if done is None:
        return 1
    report = load_dataset(done.path)
    print(report.summary())
    for problem in report.problems[:20]:
        print(f"  {problem}")
    if len(report.problems) > 20:
        print(f"  … and {len(report.problems) - 20} more")
    for user_type, count in sorted(report.user_types.items(), key=lambda item: (-item[1], item[0]))[:args.top]:
        print(f"{count:>8}  {user_type}")
    print(f"Train on it with: muse-desktop train CONFIG.yaml (dataset: {done.path})")
    return 0


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Who writes examples (build-data, augment): a local model or an OpenAI-compatible server."""
    parser.add_argument("--model", metavar="M.gguf", help="the teacher is this local model")
    parser.add_argument("--server", metavar="URL", help="the teacher is this OpenAI-compatible server "
                                                         "(default http://127.0.0.1:8080/v1)")
    parser.add_argument("--server-model", default="local", help="the model name the server expects")


def _teacher(args: argparse.Namespace):
    """The loaded GGUF (``--model``) or an OpenAI-compatible server (``--server``); returns (ask, closer)."""
    from muse_desktop.data.docbuilder import DEFAULT_SERVER, engine_teacher, server_teacher

    if args.model:
        from muse_desktop.chat.engine import ChatEngine, EngineSettings

        engine = ChatEngine(args.model, EngineSettings(context_length=4096))
        return engine_teacher(engine), engine.close
    return server_teacher(args.server or DEFAULT_SERVER, args.server_model), lambda: None


def _cmd_build_data(args: argparse.Namespace) -> int:
    from muse_desktop.data.docbuilder import build_dataset

    ask, close = _teacher(args)
    try:
        run_events(build_dataset(args.folder, args.user_types.split(","), args.out, ask, args.chunk_chars))
    finally:
        close()
    return 0


def _cmd_augment(args: argparse.Namespace) -> int:
    import json

    from muse_desktop.data.augment import self_instruct
    from muse_desktop.data.datasets import load_dataset
    from muse_desktop.base.fileio import atomic_write_text

    report = load_dataset(args.seeds)
    seeds = [{"user_type": e.user_type or "Adult", "question": e.turns[0].content, "answer": e.turns[-1].content}
             for e in report.examples if e.turns]
    ask, close = _teacher(args)
    try:
        done = run_events(self_instruct(seeds, ask, args.count, args.threshold))
    except ValueError as exc:
        if isinstance(exc, MuseError):
            raise
        raise CliError(str(exc)) from None  # too few seeds: what was given cannot be used
    finally:
        close()
    kept = done.data["kept"] if done is not None else []
    atomic_write_text(args.out, "".join(json.dumps(k, ensure_ascii=False) + "\n" for k in kept))
    print(f"{len(kept)} candidates written to {args.out} for review (nothing was added to your data).")
    return 0


def _cmd_preferences(args: argparse.Namespace) -> int:
    from muse_desktop.evaluation.preferences import export_instruction_data, export_pairs
    from muse_desktop.chat.store import Store

    if not (args.instructions or args.pairs):
        raise CliError("say where to write: --instructions OUT.jsonl and/or --pairs OUT.jsonl")
    store = Store()
    try:
        profile_id, whose = None, ""
        if args.person:
            from muse_desktop.household.people import HouseholdError, find_person

            try:
                person = find_person(store, args.person)
            except HouseholdError as exc:
                raise CliError(str(exc)) from None
            profile_id, whose = person.id, f" for {person.name}"
        if args.instructions:
            print(f"{export_instruction_data(store, args.instructions, profile_id)} question → best answer rows"
                  f"{whose} written to {args.instructions}")
        if args.pairs:
            print(f"{export_pairs(store, args.pairs, profile_id)} chosen/rejected pairs{whose} written to {args.pairs}")
    finally:
        store.close()
    return 0
