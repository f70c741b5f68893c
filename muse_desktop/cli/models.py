"""Model files from the command line: the demo model, conversion to GGUF, quantization, Get MUsE."""

from __future__ import annotations

import argparse

from muse_desktop.cli.common import CliError, run_events, training_imports


def add_parsers(commands) -> None:
    from converters.pipeline import DEFAULT_QUANT as DEFAULT_TYPE
    from converters.pipeline import OUTTYPES, QUANT_TYPES
    from muse_desktop.models.demo_model import Variant

    demo = commands.add_parser("demo-model", help="build the tiny demo checkpoint (random weights)")
    demo.add_argument("out_dir", metavar="OUT_DIR")
    demo.add_argument("--variant", choices=Variant.ALL, default=Variant.MINI_4K)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo_model)

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

    quant = commands.add_parser("quantize", help="quantize a GGUF with llama.cpp's quantizer")
    quant.add_argument("input", metavar="IN.gguf")
    quant.add_argument("out", metavar="OUT.gguf")
    quant.add_argument("--type", choices=list(QUANT_TYPES), default=DEFAULT_TYPE, type=str.upper)
    quant.add_argument("--threads", type=int, metavar="N", help="threads (default: all cores)")
    quant.set_defaults(func=_cmd_quantize)

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


def _cmd_demo_model(args: argparse.Namespace) -> int:
    try:
        from muse_desktop.models.demo_model import build_demo_model
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CliError(f"building the demo model needs sentencepiece and safetensors ({exc})") from None
    path = build_demo_model(args.out_dir, args.variant, seed=args.seed)
    print(f"Demo model ({args.variant}, random weights) written to {path}")
    return 0


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


def _cmd_get_muse(args: argparse.Namespace) -> int:
    from muse_desktop.models.getmuse import add_to_library, get_muse, standard_check
    from muse_desktop.household.settings import load_settings, save_settings
    from muse_desktop.chat.store import Store

    loaded = load_settings().settings
    if args.check_logits:
        training_imports()
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
