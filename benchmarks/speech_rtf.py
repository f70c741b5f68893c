#!/usr/bin/env python3
"""Speech input speed: whisper.cpp vs faster-whisper at real model shapes (random weights).

    python benchmarks/speech_rtf.py [--seconds 10] [--threads 2] [--tokens 24] [--shape base.en]

Each engine runs in its own process (so peak memory is its own) on the same audio,
with the same number of decoded tokens: random weights cannot end a sentence, so the
decoder is capped at ``--tokens`` (about one spoken sentence). Real-time factor =
processing time / audio length (below 1: faster than speech). The anchor, in the same
run, is a float32 matrix product's GFLOP/s, to compare machines. faster-whisper's model
is made by CTranslate2's converter from a random transformers Whisper (needs torch).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

SHAPES = {"tiny.en": dict(d=384, heads=6, layers=4), "base.en": dict(d=512, heads=8, layers=6),
          "small.en": dict(d=768, heads=12, layers=12)}


def anchor() -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    a @ a
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ a
    return 2 * 1024**3 * n / (time.perf_counter() - start) / 1e9


def audio(seconds: float):
    import numpy as np

    t = np.arange(int(16000 * seconds)) / 16000
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def run_whispercpp(args, work: Path) -> dict:
    from muse_desktop.models.whisper_demo import Shape, write_model

    from muse_desktop.speech.listen import Recognizer

    s = SHAPES[args.shape]
    shape = Shape(n_audio_state=s["d"], n_audio_head=s["heads"], n_audio_layer=s["layers"], n_text_state=s["d"],
                  n_text_head=s["heads"], n_text_layer=s["layers"])
    model = write_model(work / f"ggml-{args.shape}-random.bin", shape, words=args.tokens)
    recognizer = Recognizer(model, threads=args.threads)
    clip = audio(args.seconds)
    recognizer.transcribe(clip[:16000], max_tokens=2)  # warm-up
    start = time.perf_counter()
    extra = {"audio_ctx": args.audio_ctx} if args.audio_ctx else {}
    text = recognizer.transcribe(clip, max_tokens=args.tokens, temperature_inc=0.0, **extra)  # no fallback re-runs
    took = time.perf_counter() - start
    return {"engine": "whisper.cpp (pywhispercpp" + (f", audio_ctx {args.audio_ctx})" if args.audio_ctx else ")"), "seconds": took, "words": len(text.split()),
            "model_mb": model.stat().st_size / 2**20}


def convert_random(args, work: Path) -> dict:
    """A random transformers Whisper at the shape, converted by CTranslate2 (needs torch)."""
    import ctranslate2.converters
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    s = SHAPES[args.shape]
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, d_model=s["d"], encoder_layers=s["layers"], decoder_layers=s["layers"],
                           encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"],
                           encoder_ffn_dim=4 * s["d"], decoder_ffn_dim=4 * s["d"], num_mel_bins=80,
                           decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256,
                           bos_token_id=50256)
    hf = work / "hf"
    WhisperForConditionalGeneration(config).half().save_pretrained(hf)
    from tokenizers import Tokenizer, models

    # Whisper's English-only ids: faster-whisper finds its special tokens by these names.
    vocab = {f"t{i}": i for i in range(50256)}
    specials = ["<|endoftext|>", "<|startoftranscript|>"] + [f"<|lang{i}|>" for i in range(99)] + [
        "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    specials += [f"<|{i * 0.02:.2f}|>" for i in range(51864 - 50256 - len(specials))]
    vocab |= {name: 50256 + i for i, name in enumerate(specials)}
    tok = Tokenizer(models.WordLevel(vocab | {"<unk>": 51864}, unk_token="<unk>"))
    tok.save(str(hf / "tokenizer.json"))
    ctranslate2.converters.TransformersConverter(str(hf), copy_files=["tokenizer.json"]).convert(
        str(work / "ct2"), force=True)
    return {}


def run_faster_whisper(args, work: Path) -> dict:
    out = work / "ct2"
    if not (out / "model.bin").is_file():  # converted in its own process: torch stays out of the measurement
        subprocess.run([sys.executable, __file__, "--engine", "convert", "--shape", args.shape, "--work", str(work)],
                       check=True, capture_output=True)
    from faster_whisper import WhisperModel

    model = WhisperModel(str(out), device="cpu", compute_type=args.compute, cpu_threads=args.threads)
    clip = audio(args.seconds)
    list(model.transcribe(clip[:16000], language="en", max_new_tokens=2, without_timestamps=True,
                          suppress_tokens=[])[0])
    start = time.perf_counter()
    segments, _info = model.transcribe(clip, language="en", max_new_tokens=args.tokens, without_timestamps=True,
                                       beam_size=1, temperature=0.0, condition_on_previous_text=False,
                                       suppress_tokens=[], vad_filter=False)
    words = sum(len(s.text.split()) for s in segments)
    took = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"engine": f"faster-whisper (CTranslate2, {args.compute})", "seconds": took, "words": words, "model_mb": size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base.en")
    parser.add_argument("--engine", choices=["whispercpp", "faster-whisper", "convert"])
    parser.add_argument("--work", default="/tmp/muse-speech-bench")
    parser.add_argument("--audio-ctx", type=int, default=0, help="whisper.cpp: encode only this many frames")
    parser.add_argument("--compute", default="float32", help="faster-whisper's compute type (float32, int8)")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.engine:
        if args.engine == "convert":
            convert_random(args, work)
            return
        result = (run_whispercpp if args.engine == "whispercpp" else run_faster_whisper)(args, work)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    print(f"Machine: {platform.processor() or platform.machine()}, {platform.system()}, "
          f"threads {args.threads}, shape {args.shape}, {args.seconds:.0f} s of audio, {args.tokens} tokens")
    print(f"Anchor: float32 1024x1024 matmul {anchor():.1f} GFLOP/s")
    # audio_ctx: whisper.cpp can encode only the part of the 30 s window the clip fills (50 frames a second).
    runs = (("whispercpp", "-", 0), ("whispercpp", "-", int(args.seconds * 50) + 64),
            ("faster-whisper", "float32", 0), ("faster-whisper", "int8", 0))
    for engine, compute, audio_ctx in runs:
        proc = subprocess.run([sys.executable, __file__, "--engine", engine, "--compute", compute,
                               "--audio-ctx", str(audio_ctx),
                               "--seconds", str(args.seconds),
                               "--threads", str(args.threads), "--tokens", str(args.tokens), "--shape", args.shape,
                               "--work", str(work / engine)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{engine}: failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{r['engine']}: {r['seconds']:.2f} s, real-time factor {r['seconds'] / args.seconds:.3f}, "
              f"peak memory {r['peak_rss_mb']:.0f} MB, model {r['model_mb']:.0f} MB, {r['words']} words")
    print(f"Anchor again: {anchor():.1f} GFLOP/s")


if __name__ == "__main__":
    main()
