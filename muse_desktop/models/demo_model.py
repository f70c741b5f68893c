"""Build a tiny, real Phi-3 checkpoint: the tests' model and the app's offline demo.

A Phi-3 architecture (a few layers, width 64, random weights) saved as a real
Hugging Face checkpoint: ``config.json`` in the form Microsoft's Phi-3 checkpoints
use, sharded safetensors with an index, ``generation_config.json``, and a
sentencepiece BPE tokenizer trained here on text shipped in ``resources/``
(byte fallback, identity normalisation, whitespace kept) with Phi-3's added
special tokens in Phi-3's order and padding entries up to the vocabulary size.

Weights come from numpy with a fixed seed, so a build is the same on every
machine and every torch version. Norm weights are not all ones, so a converter
that drops or swaps a norm shows up in a logits comparison.

Needs ``sentencepiece`` and ``safetensors``; ``transformers`` (when installed)
also writes ``tokenizer.json``. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muse_desktop.base.fileio import atomic_path, atomic_write_text
from muse_desktop.base.paths import resource
from muse_desktop.base.prompting.contract import Special
from muse_desktop.models.random_weights import RandomWeights

CORPUS_FILE = "demo_corpus.txt"
SP_VOCAB_SIZE = 600  # sentencepiece pieces, before the added tokens
VOCAB_MULTIPLE = 64  # Phi-3 pads its 32011 tokens to 32064


class Variant:
    """The three shapes of the Phi-3 family the tests cover."""

    MINI_4K = "4k"  # Phi-3-mini-4k: full attention heads, no rope scaling
    MINI_128K = "128k"  # Phi-3-mini-128k: LongRoPE factors
    GQA = "gqa"  # Phi-3-medium: fewer KV heads than query heads
    ALL = (MINI_4K, MINI_128K, GQA)


@dataclass(frozen=True)
class Shape:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 128
    max_positions: int = 4096
    original_max_positions: int = 4096
    sliding_window: int = 2047
    long_rope: bool = False


SHAPES = {
    Variant.MINI_4K: Shape(),
    # Same ratio of contexts as Phi-3-mini-128k (131072 / 4096 = 32), scaled down so
    # that a test can run past the original context in a second.
    Variant.MINI_128K: Shape(max_positions=8192, original_max_positions=256, sliding_window=262144, long_rope=True),
    Variant.GQA: Shape(heads=4, kv_heads=2, layers=3),
}

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def corpus_text() -> str:
    """The text the demo tokenizer is trained on: the demo corpus plus the user-type catalog."""
    text = resource(CORPUS_FILE).read_text(encoding="utf-8")
    catalog = resource("user_types.tsv").read_text(encoding="utf-8")
    lines = [" ".join(line.split("\t")[1:]) for line in catalog.splitlines() if line and not line.startswith("#")]
    return text + "\n".join(lines) + "\n"


def train_tokenizer(out_dir: Path, vocab_size: int = SP_VOCAB_SIZE) -> Path:
    """Train the sentencepiece BPE model; returns the path of ``tokenizer.model``.

    Trained from memory, one thread: the model file then holds no temporary paths
    and is the same byte for byte on every run.
    """
    import io

    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_text().splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,  # as Phi-3's tokenizer.model
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path = out_dir / "tokenizer.model"
    with atomic_path(path) as tmp:
        tmp.write_bytes(model.getvalue())
    return path


def _padded_vocab(n_tokens: int) -> int:
    return int(math.ceil(n_tokens / VOCAB_MULTIPLE) * VOCAB_MULTIPLE)


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _tokenizer_files(out_dir: Path, sp_model: Path) -> dict[str, int]:
    """Copy the sentencepiece model and write the HF tokenizer files; returns special ids."""
    import sentencepiece as spm

    shutil.copyfile(sp_model, out_dir / "tokenizer.model")
    n_pieces = spm.SentencePieceProcessor(model_file=str(sp_model)).get_piece_size()
    added = {token: n_pieces + i for i, token in enumerate(Special.PHI3_ADDED)}
    added_decoder = {
        "0": {"content": Special.UNK, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
        "1": {"content": Special.BOS, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
        "2": {"content": Special.EOS, "lstrip": False, "normalized": False, "rstrip": True, "single_word": False, "special": False},
    }
    for token, token_id in added.items():
        added_decoder[str(token_id)] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": token not in Special.KEEP_WHITESPACE_AFTER,
            "single_word": False,
            "special": True,
        }
    _write_json(out_dir / "added_tokens.json", added)
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "bos_token": Special.BOS,
            "eos_token": Special.ENDOFTEXT,
            "pad_token": Special.ENDOFTEXT,
            "unk_token": Special.UNK,
        },
    )
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": added_decoder,
            "bos_token": Special.BOS,
            "chat_template": PHI3_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": Special.ENDOFTEXT,
            # legacy: a "▁" is put in front of every text run, also after special
            # tokens, as Phi-3's shipped tokenizer.json and llama.cpp both do.
            "legacy": True,
            "model_max_length": 4096,
            "pad_token": Special.ENDOFTEXT,
            "padding_side": "left",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": Special.UNK,
            "use_default_system_prompt": False,
        },
    )
    return {"n_pieces": n_pieces, **added}


def _long_rope_factors(count: int) -> tuple[list[float], list[float]]:
    # Shaped like Phi-3-mini-128k's: short factors close to 1, long factors rising
    # from 1 to the context ratio over the rotary dimensions.
    position = np.linspace(0.0, 1.0, count)
    short = (1.0 + 0.05 * position).round(6).tolist()
    long = (1.0 + 31.0 * position**2).round(6).tolist()
    return short, long


def make_config(shape: Shape, vocab_size: int, special: dict[str, int]) -> dict:
    """config.json in the form of Microsoft's Phi-3 checkpoints."""
    config = {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": special[Special.ENDOFTEXT],
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": shape.max_positions,
        "model_type": "phi3",
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "original_max_position_embeddings": shape.original_max_positions,
        "pad_token_id": special[Special.ENDOFTEXT],
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "sliding_window": shape.sliding_window,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    if shape.long_rope:
        short, long = _long_rope_factors(shape.hidden // shape.heads // 2)
        config["rope_scaling"] = {"type": "longrope", "short_factor": short, "long_factor": long}
    return config


def make_weights(shape: Shape, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Random float32 weights with Hugging Face Phi-3 tensor names and layouts."""
    random = RandomWeights(seed)
    head_dim = shape.hidden // shape.heads
    qkv_rows = (shape.heads + 2 * shape.kv_heads) * head_dim
    dense = random.dense

    def norm() -> np.ndarray:
        return random.norm(shape.hidden)

    weights = {"model.embed_tokens.weight": random.normal(vocab_size, shape.hidden)}
    for layer in range(shape.layers):
        prefix = f"model.layers.{layer}"
        weights[f"{prefix}.input_layernorm.weight"] = norm()
        weights[f"{prefix}.self_attn.qkv_proj.weight"] = dense(qkv_rows, shape.hidden)
        weights[f"{prefix}.self_attn.o_proj.weight"] = dense(shape.hidden, shape.heads * head_dim)
        weights[f"{prefix}.post_attention_layernorm.weight"] = norm()
        weights[f"{prefix}.mlp.gate_up_proj.weight"] = dense(2 * shape.intermediate, shape.hidden)
        weights[f"{prefix}.mlp.down_proj.weight"] = dense(shape.hidden, shape.intermediate)
    weights["model.norm.weight"] = norm()
    weights["lm_head.weight"] = dense(vocab_size, shape.hidden)
    return weights


def save_sharded(weights: dict[str, np.ndarray], out_dir: Path, shards: int = 2) -> list[Path]:
    """Save as ``model-0000k-of-0000n.safetensors`` plus ``model.safetensors.index.json``."""
    from safetensors.numpy import save_file

    names = list(weights)
    shards = max(1, min(shards, len(names)))
    if shards == 1:
        path = out_dir / "model.safetensors"
        with atomic_path(path) as tmp:
            save_file(weights, str(tmp), metadata={"format": "pt"})
        return [path]
    per_shard = math.ceil(len(names) / shards)
    weight_map: dict[str, str] = {}
    paths = []
    for index in range(shards):
        chunk = names[index * per_shard : (index + 1) * per_shard]
        file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        with atomic_path(out_dir / file_name) as tmp:
            save_file({name: weights[name] for name in chunk}, str(tmp), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, file_name))
        paths.append(out_dir / file_name)
    total = int(sum(array.nbytes for array in weights.values()))
    _write_json(out_dir / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    return paths


def _write_tokenizer_json(out_dir: Path) -> None:
    """Let transformers convert the sentencepiece model into tokenizer.json, when installed.

    Only tokenizer.json is taken from it: the other files keep the form Phi-3
    checkpoints ship, whatever transformers version runs the build.
    """
    try:
        from transformers import LlamaTokenizer
    except ImportError:
        return
    # Named explicitly: AutoTokenizer would pick its converter from config.json's
    # model type and drop the "▁" prefix that Phi-3's own tokenizer.json has.
    tokenizer = LlamaTokenizer.from_pretrained(str(out_dir))
    with atomic_path(out_dir / "tokenizer.json") as tmp:
        tokenizer.backend_tokenizer.save(str(tmp))


def build_demo_model(
    out_dir: str | os.PathLike[str],
    variant: str = Variant.MINI_4K,
    *,
    seed: int = 0,
    shards: int = 2,
    tokenizer_model: Path | None = None,
    shape: Shape | None = None,
) -> Path:
    """Build the tiny checkpoint in ``out_dir`` (created) and return it.

    ``tokenizer_model`` reuses an already trained ``tokenizer.model`` (tests build
    three variants with one tokenizer); ``shape`` replaces the variant's sizes.
    """
    if variant not in Variant.ALL:
        raise ValueError(f"unknown variant '{variant}'; choose one of {', '.join(Variant.ALL)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_model is None:
        tokenizer_model = train_tokenizer(out / ".tokenizer-build")
    special = _tokenizer_files(out, tokenizer_model)
    vocab_size = _padded_vocab(special["n_pieces"] + len(Special.PHI3_ADDED))
    shape = shape or SHAPES[variant]
    _write_json(out / "config.json", make_config(shape, vocab_size, special))
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": 1,
            "eos_token_id": [special[Special.ENDOFTEXT], special[Special.ASSISTANT], special[Special.END]],
            "pad_token_id": special[Special.ENDOFTEXT],
        },
    )
    save_sharded(make_weights(shape, vocab_size, seed), out, shards=shards)
    _write_tokenizer_json(out)
    shutil.rmtree(out / ".tokenizer-build", ignore_errors=True)
    return out


DEMO_NOTICE = "Demo model: random weights. Its answers are nonsense; it only shows how the app works."


def ensure_demo_gguf(folder: str | os.PathLike[str] | None = None, cancel=None):
    """Build (once) the tiny demo checkpoint and its GGUF; yields events, Done's path is the GGUF.

    Works in the chat-only install: no torch, just sentencepiece, safetensors and gguf.
    """
    from converters.convert import convert_model
    from converters.errors import ConversionError
    from converters.gguf_check import inspect_gguf
    from muse_desktop.base.events import Done, Log
    from muse_desktop.base.paths import user_dirs

    root = Path(folder) if folder else user_dirs().models / "demo"
    target = root / "muse-demo-phi3-tiny.gguf"
    try:
        inspect_gguf(target)
        yield Done(DEMO_NOTICE, str(target))
        return
    except ConversionError:
        pass
    yield Log("Building the demo model (a few seconds)…")
    checkpoint = build_demo_model(root / "checkpoint", Variant.MINI_4K)
    for event in convert_model(checkpoint, target, "f16", cancel=cancel):
        if not isinstance(event, Done):
            yield event
    yield Done(DEMO_NOTICE, str(target))
