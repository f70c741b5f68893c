"""Fine-tuning from the command line: train (or resume) a run, export it to a GGUF."""

from __future__ import annotations

import argparse
import sys

from muse_desktop.cli.common import CliError, run_events, training_imports


def add_parsers(commands) -> None:
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


def _cmd_train(args: argparse.Namespace) -> int:
    from muse_desktop.training.child import default_run_dir, run_training
    from muse_desktop.training.config import load_config

    if not args.resume and not args.config:
        raise CliError("give a CONFIG.yaml to start a run, or --resume RUN_DIR to continue one")
    training_imports()
    if args.resume:
        config, run_dir = None, args.resume
        print(f"Resuming {run_dir}", file=sys.stderr)
    else:
        config = load_config(args.config)
        run_dir = args.run_dir or default_run_dir(config)
        print(f"Run folder: {run_dir}", file=sys.stderr)
    run_events(run_training(config, run_dir))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from muse_desktop.chat.store import Store
    from muse_desktop.training.export import export_run

    training_imports()
    store = Store()
    try:
        run_events(export_run(args.run_dir, "adapter" if args.adapter else "merge", args.type, store=store,
                              verify=not args.no_verify))
    finally:
        store.close()
    return 0
