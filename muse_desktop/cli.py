"""The ``muse-desktop`` command: no arguments opens the app; sub-commands work headless."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence

from converters.errors import ConversionError  # a plain exception module, nothing heavy
from muse_desktop import APP_NAME, __version__
from muse_desktop.events import Cancelled


class CliError(Exception):
    """A failure reported to the user as one line, without a traceback."""


def _cmd_user_types(args: argparse.Namespace) -> int:
    from muse_desktop.usertypes import load_catalog

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


def _cmd_demo_model(args: argparse.Namespace) -> int:
    try:
        from muse_desktop.demo_model import build_demo_model
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CliError(f"building the demo model needs sentencepiece and safetensors ({exc})") from None
    path = build_demo_model(args.out_dir, args.variant, seed=args.seed)
    print(f"Demo model ({args.variant}, random weights) written to {path}")
    return 0




def _amount(event) -> str:
    if event.unit == "bytes":
        return f"{event.done / 2**20:.1f}/{event.total / 2**20:.1f} MiB"
    return f"{event.done:g}/{event.total:g} {event.unit}"


def run_events(events) -> object:
    """Print a generator's events (a bar on a terminal, plain lines otherwise); return Done's data."""
    from muse_desktop.events import Done, Log, Progress

    tty = sys.stderr.isatty()
    result = None
    for event in events:
        if isinstance(event, Progress):
            if tty:
                filled = int(30 * event.fraction)
                line = f"[{'#' * filled}{'-' * (30 - filled)}] {_amount(event)} {event.message}"
                print(f"\r{line[:110]:<110}", end="", file=sys.stderr, flush=True)
            else:
                print(f"{_amount(event)} {event.message}", file=sys.stderr, flush=True)
        elif isinstance(event, Log):
            print(("\n" if tty else "") + event.message, file=sys.stderr, flush=True)
        elif isinstance(event, Done):
            if tty:
                print(file=sys.stderr)
            print(event.message, flush=True)
            result = event
    return result


def _cmd_convert(args: argparse.Namespace) -> int:
    from converters.convert import convert_model

    run_events(convert_model(args.model_dir, args.out, args.outtype, args.adapter))
    if args.verify:
        from converters.pipeline import NotVerified, verify_against_source

        try:
            report = verify_against_source(args.model_dir, args.out, adapter_dir=args.adapter)
        except ImportError as exc:
            raise CliError(f"--verify needs the training extra (pip install 'muse-desktop[train]'): {exc}") from None
        except NotVerified as exc:
            raise CliError(f"verification failed: {exc}") from None
        print(f"Verify: {report.summary()}")
    return 0


def _cmd_convert_adapter(args: argparse.Namespace) -> int:
    from converters.convert import convert_adapter

    run_events(convert_adapter(args.adapter_dir, args.out, args.base, args.outtype))
    return 0


def _cmd_get_muse(args: argparse.Namespace) -> int:
    from muse_desktop.getmuse import add_to_library, get_muse, standard_check
    from muse_desktop.settings import load_settings, save_settings
    from muse_desktop.store import Store

    loaded = load_settings().settings
    if args.check_logits:
        _training_imports()
    done = run_events(get_muse(args.models_dir, args.adapter_repo or loaded.muse_adapter_repo,
                               args.endpoint or loaded.hub_endpoint or None, way=args.way,
                               base_revision=args.base_revision or loaded.base_revision,
                               check=(lambda built: standard_check(built, logits=True)) if args.check_logits
                               else None))
    if done is None:
        return 1
    store = Store()
    try:
        add_to_library(store, done)
    finally:
        store.close()
    adapter = done.data.get("adapter_path", "")
    if adapter:
        print(f"MUsE add-on: {adapter}")
    if args.use:
        loaded.model_path, loaded.adapter_path = done.path, adapter
        save_settings(loaded)
        print(f"The app will open {done.path}" + (" with the MUsE add-on" if adapter else "") + " from now on.")
    return 0


def _cmd_get_dataset(args: argparse.Namespace) -> int:
    from muse_desktop.datasets import DatasetError, load_dataset
    from muse_desktop.getdataset import get_dataset
    from muse_desktop.settings import load_settings

    loaded = load_settings().settings
    done = run_events(get_dataset(args.repo, args.out, args.endpoint or loaded.hub_endpoint or None, args.revision))
    if done is None:
        return 1
    try:
        report = load_dataset(done.path)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    print(report.summary())
    for problem in report.problems[:20]:
        print(f"  {problem}")
    if len(report.problems) > 20:
        print(f"  … and {len(report.problems) - 20} more")
    for user_type, count in sorted(report.user_types.items(), key=lambda item: (-item[1], item[0]))[:args.top]:
        print(f"{count:>8}  {user_type}")
    print(f"Train on it with: muse-desktop train CONFIG.yaml (dataset: {done.path})")
    return 0


def _training_imports():
    try:
        import torch  # noqa: F401  (checked here so the message is about the install, not a traceback)
    except ImportError:
        raise CliError("training needs the training extra: pip install 'muse-desktop[train]'") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from muse_desktop.datasets import DatasetError
    from muse_desktop.training.child import TrainingFailed, default_run_dir, run_training
    from muse_desktop.training.config import ConfigError, load_config

    if not args.resume and not args.config:
        raise CliError("give a CONFIG.yaml to start a run, or --resume RUN_DIR to continue one")
    _training_imports()
    try:
        if args.resume:
            config, run_dir = None, args.resume
            print(f"Resuming {run_dir}", file=sys.stderr)
        else:
            config = load_config(args.config)
            run_dir = args.run_dir or default_run_dir(config)
            print(f"Run folder: {run_dir}", file=sys.stderr)
        run_events(run_training(config, run_dir))
    except (ConfigError, DatasetError) as exc:
        raise CliError(str(exc)) from None
    except TrainingFailed as exc:
        raise CliError(str(exc)) from None
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from muse_desktop.store import Store
    from muse_desktop.training.export import ExportError, export_run

    _training_imports()
    store = Store()
    try:
        run_events(export_run(args.run_dir, "adapter" if args.adapter else "merge", args.type, store=store,
                              verify=not args.no_verify))
    except ExportError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    return 0


def _caregiver_check(settings, what: str) -> None:
    """With a PIN set, the command line asks for it too: it may do only what the window's caregiver menu may."""
    import getpass

    from muse_desktop import lock

    if not lock.has_pin(settings):
        return
    try:
        pin = getpass.getpass(f"Caregiver PIN (needed to {what}): ")
    except EOFError:
        pin = ""
    attempt = lock.try_pin(settings, pin)
    from muse_desktop.settings import save_settings

    save_settings(settings)  # the failure count and the wait, as in the window
    if not attempt.ok:
        raise CliError(attempt.message)


def _cmd_lock(args: argparse.Namespace) -> int:
    from muse_desktop import lock
    from muse_desktop.settings import load_settings

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
    from muse_desktop.scope import MIN_F1, ScopeError, ScopeGuard, train_scope_guard
    from muse_desktop.settings import load_settings, save_settings

    settings = load_settings().settings
    if args.action in ("train", "on", "off"):
        _caregiver_check(settings, {"train": "train the kiosk guard", "on": "switch kiosk mode on",
                                    "off": "switch kiosk mode off"}[args.action])
    if args.action == "train":
        from muse_desktop.datasets import DatasetError, load_dataset

        if not args.dataset:
            raise CliError("kiosk train needs the dataset whose questions are in scope")
        try:
            report = load_dataset(args.dataset)
            questions = [e.turns[0].content if e.turns else e.text for e in report.examples]
            outside = None
            if args.out_of_scope:
                outside = Path(args.out_of_scope).read_text(encoding="utf-8").splitlines()
            result = train_scope_guard(questions, outside, topic=args.topic)
        except (DatasetError, ScopeError) as exc:
            raise CliError(str(exc)) from None
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


def _teacher(args: argparse.Namespace):
    """The loaded GGUF (``--model``) or an OpenAI-compatible server (``--server``); returns (ask, closer)."""
    from muse_desktop.docbuilder import DEFAULT_SERVER, engine_teacher, server_teacher

    if args.model:
        from muse_desktop.chat.engine import ChatEngine, EngineSettings, ModelError

        try:
            engine = ChatEngine(args.model, EngineSettings(context_length=4096))
        except ModelError as exc:
            raise CliError(str(exc)) from None
        return engine_teacher(engine), engine.close
    return server_teacher(args.server or DEFAULT_SERVER, args.server_model), lambda: None


def _cmd_build_data(args: argparse.Namespace) -> int:
    from muse_desktop.docbuilder import BuilderError, build_dataset

    ask, close = _teacher(args)
    try:
        run_events(build_dataset(args.folder, args.user_types.split(","), args.out, ask, args.chunk_chars))
    except BuilderError as exc:
        raise CliError(str(exc)) from None
    finally:
        close()
    return 0


def _cmd_augment(args: argparse.Namespace) -> int:
    import json

    from muse_desktop.augment import self_instruct
    from muse_desktop.datasets import DatasetError, load_dataset
    from muse_desktop.fileio import atomic_write_text

    try:
        report = load_dataset(args.seeds)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    seeds = [{"user_type": e.user_type or "Adult", "question": e.turns[0].content, "answer": e.turns[-1].content}
             for e in report.examples if e.turns]
    ask, close = _teacher(args)
    try:
        done = run_events(self_instruct(seeds, ask, args.count, args.threshold))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    finally:
        close()
    kept = done.data["kept"] if done is not None else []
    atomic_write_text(args.out, "".join(json.dumps(k, ensure_ascii=False) + "\n" for k in kept))
    print(f"{len(kept)} candidates written to {args.out} for review (nothing was added to your data).")
    return 0


def _cmd_preferences(args: argparse.Namespace) -> int:
    from muse_desktop.preferences import export_instruction_data, export_pairs
    from muse_desktop.store import Store

    if not (args.instructions or args.pairs):
        raise CliError("say where to write: --instructions OUT.jsonl and/or --pairs OUT.jsonl")
    store = Store()
    try:
        if args.instructions:
            print(f"{export_instruction_data(store, args.instructions)} question → best answer rows "
                  f"written to {args.instructions}")
        if args.pairs:
            print(f"{export_pairs(store, args.pairs)} chosen/rejected pairs written to {args.pairs}")
    finally:
        store.close()
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from converters.quantize import quantize

    from converters.gguf_check import inspect_gguf
    from converters.quality import compare_quantized

    run_events(quantize(args.input, args.out, args.type, args.threads))
    original = {0: "F32", 1: "F16", 32: "BF16"}.get(inspect_gguf(args.input).file_type)
    if original:  # from an unquantized file: say what the quantization cost
        report = compare_quantized(args.input, args.out, args.type, threads=args.threads, reference=original)
        print(f"Checked: {report.summary()}")
    return 0


def resolve_user_type(text: str):
    """A catalog type by id, prompt form or name; otherwise a checked custom type."""
    from muse_desktop.usertypes import InvalidUserType, custom_user_type, fold, load_catalog

    catalog = load_catalog()
    found = catalog.get(text) or catalog.by_prompt_name(text)
    if found is None:
        matches = [t for t in catalog.search(text) if fold(t.display_name) == fold(text)]
        found = matches[0] if matches else None
    if found is not None:
        return found
    try:
        return custom_user_type(text)
    except InvalidUserType as exc:
        raise CliError(str(exc)) from None


def _cmd_chat(args: argparse.Namespace) -> int:
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings, ModelError, default_sampling
    from muse_desktop.events import Done, Log, Text
    from muse_desktop.prompting import PromptError, Turn, prompt_text
    from muse_desktop.settings import load_settings

    user_type = resolve_user_type(args.user_type)
    turns = [Turn("user", args.question)]
    settings = load_settings().settings
    template = settings.instruction_template or None
    if not args.prompt_only:
        from muse_desktop.scope import check_question

        verdict = check_question(args.question, settings.kiosk_mode)  # the window's check, here too
        if not verdict.allowed:
            if verdict.problem:
                print(verdict.problem, file=sys.stderr)
            print(verdict.refusal)
            return 0
    try:
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
    except (ModelError, PromptError) as exc:
        raise CliError(str(exc)) from None
    return 0


def _open_app(screenshot: str | None = None) -> int:
    try:
        from muse_desktop.ui.app import run_app
    except ImportError as exc:
        raise CliError(f"the desktop window needs PySide6, which could not be loaded ({exc})") from None
    return run_app(sys.argv[:1], screenshot=screenshot)


def _add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Who writes examples (build-data, augment): a local model or an OpenAI-compatible server."""
    parser.add_argument("--model", metavar="M.gguf", help="the teacher is this local model")
    parser.add_argument("--server", metavar="URL", help="the teacher is this OpenAI-compatible server "
                                                         "(default http://127.0.0.1:8080/v1)")
    parser.add_argument("--server-model", default="local", help="the model name the server expects")


def build_parser() -> argparse.ArgumentParser:
    from muse_desktop.demo_model import Variant

    parser = argparse.ArgumentParser(
        prog="muse-desktop",
        description=f"{APP_NAME}: an offline assistant that adapts its answers to who you are. "
        "Run without a command to open the app.",
    )
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    parser.add_argument("--self-test", nargs="?", const="", metavar="MODEL.gguf",
                        help="check this install headless (resources, database, a model answering, the "
                             "quantizer) and exit 0/1; without a model the demo model is built")
    parser.add_argument("--screenshot", metavar="PNG", help=argparse.SUPPRESS)  # open, save the window, quit
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    user_types = commands.add_parser("user-types", help="list or search the user types")
    user_types.add_argument("--search", metavar="TEXT", help="match names, ignoring case and accents")
    user_types.add_argument("--group", metavar="GROUP", help="only types whose group contains GROUP")
    user_types.add_argument("--limit", type=int, metavar="N", help="show at most N types")
    user_types.set_defaults(func=_cmd_user_types)

    demo = commands.add_parser("demo-model", help="build the tiny demo checkpoint (random weights)")
    demo.add_argument("out_dir", metavar="OUT_DIR")
    demo.add_argument("--variant", choices=Variant.ALL, default=Variant.MINI_4K)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo_model)

    from converters.pipeline import OUTTYPES

    outtypes = list(OUTTYPES)
    convert = commands.add_parser("convert", help="convert a Phi-3 checkpoint (optionally merging a LoRA) to GGUF")
    convert.add_argument("model_dir", metavar="MODEL_DIR")
    convert.add_argument("out", metavar="OUT.gguf")
    convert.add_argument("--adapter", metavar="ADAPTER_DIR", help="a PEFT LoRA adapter to merge in the same pass")
    convert.add_argument("--outtype", choices=outtypes, default="f16")
    convert.add_argument("--verify", action="store_true", help="compare logits with transformers afterwards")
    convert.set_defaults(func=_cmd_convert)

    adapter = commands.add_parser("convert-adapter", help="convert a PEFT LoRA adapter to a GGUF LoRA adapter")
    adapter.add_argument("adapter_dir", metavar="ADAPTER_DIR")
    adapter.add_argument("out", metavar="OUT.gguf")
    adapter.add_argument("--base", metavar="MODEL_DIR", required=True, help="the base checkpoint it was trained on")
    adapter.add_argument("--outtype", choices=outtypes, default="f32")
    adapter.set_defaults(func=_cmd_convert_adapter)

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

    from converters.pipeline import DEFAULT_QUANT as DEFAULT_TYPE, QUANT_TYPES

    train = commands.add_parser("train", help="fine-tune with LoRA/QLoRA from a YAML config (or resume a run)")
    train.add_argument("config", metavar="CONFIG.yaml", nargs="?")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a cancelled, crashed or killed run")
    train.add_argument("--run-dir", metavar="RUN_DIR", help="where the run goes (default: the app's runs folder)")
    train.set_defaults(func=_cmd_train)

    export = commands.add_parser("export", help="turn a finished run into a GGUF the chat opens")
    export.add_argument("run_dir", metavar="RUN_DIR")
    how = export.add_mutually_exclusive_group()
    how.add_argument("--merge", action="store_true", help="merge into the base and quantize (default)")
    how.add_argument("--adapter", action="store_true", help="a small GGUF LoRA adapter applied at run time")
    export.add_argument("--type", default="Q4_K_M", type=str.upper, help="quantization (default Q4_K_M; F16 keeps f16)")
    export.add_argument("--no-verify", action="store_true", help="skip the logits check")
    export.set_defaults(func=_cmd_export)

    build = commands.add_parser("build-data", help="documents → MUsE question/answer pairs written by a teacher")
    build.add_argument("folder", metavar="FOLDER", help="a folder of .txt, .md and .html documents")
    build.add_argument("--user-types", default="Child,Elderly", help="comma-separated (default: Child,Elderly)")
    build.add_argument("--out", required=True, metavar="OUT.jsonl", help="appended to; a rerun continues")
    _add_teacher_arguments(build)
    build.add_argument("--chunk-chars", type=int, default=1500)
    build.set_defaults(func=_cmd_build_data)

    prefs = commands.add_parser("preferences", help="export what people preferred: instruction data, DPO pairs")
    prefs.add_argument("action", choices=["export"])
    prefs.add_argument("--instructions", metavar="OUT.jsonl", help="question → best answer (MUsE triples)")
    prefs.add_argument("--pairs", metavar="OUT.jsonl", help="chosen = best, rejected = worst (for dpo_pairs)")
    prefs.set_defaults(func=_cmd_preferences)

    augment = commands.add_parser("augment", help="self-instruct: more pairs in the style of a few seeds")
    augment.add_argument("seeds", metavar="SEEDS.jsonl")
    augment.add_argument("--count", type=int, default=20, help="how many candidates to ask for")
    augment.add_argument("--threshold", type=float, default=0.7, help="ROUGE-L above this is a near-duplicate")
    augment.add_argument("--out", required=True, metavar="OUT.jsonl", help="the kept candidates, for review")
    _add_teacher_arguments(augment)
    augment.set_defaults(func=_cmd_augment)

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

    get = commands.add_parser("get-muse", help="download Phi-3-mini-128k-instruct and the MUsE adapter, "
                                               "merge (or make an add-on), quantize")
    get.add_argument("--models-dir", metavar="DIR", help="where models go (default: the app's models folder)")
    get.add_argument("--adapter-repo", metavar="OWNER/NAME",
                     help="the adapter's repository on the hub (default: seohyunqkr/MUsE; 'none': the base alone)")
    get.add_argument("--way", choices=["merged", "add-on"], default="merged",
                     help="merged: one model file; add-on: the base file plus MUsE applied at run time")
    get.add_argument("--base-revision", metavar="COMMIT",
                     help="the base model's commit or branch (default: the base_revision setting, main)")
    get.add_argument("--check-logits", action="store_true",
                     help="insist on comparing the result with transformers + PEFT before keeping it (done "
                          "anyway when the training extra is installed; about 1.5 GB of memory for Phi-3-mini)")
    get.add_argument("--endpoint", metavar="URL", help="the hub (default: $MUSE_HUB_ENDPOINT or huggingface.co)")
    get.add_argument("--use", action="store_true", help="make the app open the result")
    get.set_defaults(func=_cmd_get_muse)

    data = commands.add_parser("get-dataset", help="download a dataset repository (default: the MUsE data) "
                                                   "and check it")
    data.add_argument("repo", nargs="?", default="seohyunqkr/MUsE", metavar="OWNER/NAME")
    data.add_argument("--endpoint", metavar="URL", help="the hub (default: $MUSE_HUB_ENDPOINT or huggingface.co)")
    data.add_argument("--revision", default="main", metavar="COMMIT", help="the commit or branch (default: main)")
    data.add_argument("--out", metavar="DIR", help="where it goes (default: the app's datasets folder)")
    data.add_argument("--top", type=int, default=10, metavar="N", help="show the N most common user types")
    data.set_defaults(func=_cmd_get_dataset)

    quant = commands.add_parser("quantize", help="quantize a GGUF with llama.cpp's quantizer")
    quant.add_argument("input", metavar="IN.gguf")
    quant.add_argument("out", metavar="OUT.gguf")
    quant.add_argument("--type", choices=list(QUANT_TYPES), default=DEFAULT_TYPE, type=str.upper)
    quant.add_argument("--threads", type=int, metavar="N", help="threads (default: all cores)")
    quant.set_defaults(func=_cmd_quantize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from muse_desktop.process import RUN_MODULE, run_module

    if argv[:1] == [RUN_MODULE]:  # a child process of a frozen bundle
        return run_module(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.self_test is not None:
            from muse_desktop.selftest import run_self_test

            return run_self_test(args.self_test or None)
        if args.command is None:
            return _open_app(args.screenshot)
        return args.func(args)
    except CliError as exc:
        print(f"muse-desktop: {exc}", file=sys.stderr)
        return 2
    except ConversionError as exc:
        print(f"muse-desktop: {exc}", file=sys.stderr)
        return 1
    except Cancelled:
        print("muse-desktop: cancelled", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from muse_desktop.download import DownloadError  # imported late: urllib is slow to load

        if not isinstance(exc, DownloadError):
            raise
        print(f"muse-desktop: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("muse-desktop: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"muse-desktop: {exc}", file=sys.stderr)
        return 1
