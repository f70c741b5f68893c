"""What a Phi-3 family checkpoint is, and how it is described in GGUF.

Facts checked against llama.cpp's own converter (DESIGN.md §3): HF's fused layout
is kept (qkv_proj -> attn_qkv, gate_up_proj -> ffn_up), 1-D tensors are F32,
LongRoPE checkpoints get two rope-factor tensors and an attention factor.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from converters.errors import ConversionError, read_json

SUPPORTED_ARCHITECTURES = ("Phi3ForCausalLM",)
ARCH = gguf.MODEL_ARCH.PHI3
ARCH_NAME = gguf.MODEL_ARCH_NAMES[ARCH]  # "phi3"

# The four LoRA-able linear layers of a Phi-3 block (HF module suffix -> GGUF tensor kind).
LINEAR_MODULES = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class Phi3Config:
    folder: Path
    raw: dict
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    original_max_positions: int
    rms_eps: float
    rope_theta: float
    sliding_window: int
    rope_scaling: dict | None
    tie_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def rope_dims(self) -> int:
        return int(self.raw.get("partial_rotary_factor", 1.0) * self.hidden) // self.heads

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """HF tensor name -> shape, for every tensor a complete checkpoint has."""
        qkv_rows = (self.heads + 2 * self.kv_heads) * self.head_dim
        shapes = {"model.embed_tokens.weight": (self.vocab_size, self.hidden), "model.norm.weight": (self.hidden,)}
        if not self.tie_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, self.hidden)
        for i in range(self.layers):
            p = f"model.layers.{i}"
            shapes[f"{p}.input_layernorm.weight"] = (self.hidden,)
            shapes[f"{p}.self_attn.qkv_proj.weight"] = (qkv_rows, self.hidden)
            shapes[f"{p}.self_attn.o_proj.weight"] = (self.hidden, self.heads * self.head_dim)
            shapes[f"{p}.post_attention_layernorm.weight"] = (self.hidden,)
            shapes[f"{p}.mlp.gate_up_proj.weight"] = (2 * self.intermediate, self.hidden)
            shapes[f"{p}.mlp.down_proj.weight"] = (self.hidden, self.intermediate)
        return shapes


def read_config(folder: str | Path) -> Phi3Config:
    """Read config.json and refuse, up front, anything that is not a supported Phi-3."""
    folder = Path(folder)
    path = folder / "config.json"
    raw = read_json(path, f"No config.json in {folder}: is this a Hugging Face model folder?")
    architectures = raw.get("architectures") or [raw.get("model_type", "unknown")]
    if not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        raise ConversionError(
            f"{folder.name}: architecture {', '.join(map(str, architectures))} is not supported. "
            f"Supported: {', '.join(SUPPORTED_ARCHITECTURES)} (Phi-3 / Phi-3.5 mini, mini-128k, medium)."
        )
    if raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConversionError(f"{folder.name}: partial rotary embeddings (Phi-4-mini style) are not supported.")
    try:
        config = Phi3Config(
            folder=folder,
            raw=raw,
            hidden=int(raw["hidden_size"]),
            layers=int(raw["num_hidden_layers"]),
            heads=int(raw["num_attention_heads"]),
            kv_heads=int(raw.get("num_key_value_heads") or raw["num_attention_heads"]),
            intermediate=int(raw["intermediate_size"]),
            vocab_size=int(raw["vocab_size"]),
            max_positions=int(raw["max_position_embeddings"]),
            original_max_positions=int(raw.get("original_max_position_embeddings") or raw["max_position_embeddings"]),
            rms_eps=float(raw.get("rms_norm_eps", 1e-5)),
            rope_theta=float(raw.get("rope_theta", 10000.0)),
            sliding_window=int(raw.get("sliding_window") or 0),
            rope_scaling=raw.get("rope_scaling"),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{path}: missing or invalid setting {exc}.") from None
    if config.hidden % config.heads or config.heads % config.kv_heads:
        raise ConversionError(f"{path}: hidden size, heads and KV heads do not divide evenly.")
    if config.rope_scaling:
        kind = str(config.rope_scaling.get("rope_type", config.rope_scaling.get("type", ""))).lower()
        if kind not in ("longrope", "su"):
            raise ConversionError(f"{path}: rope scaling '{kind}' is not supported (only LongRoPE).")
        long, short = config.rope_scaling.get("long_factor"), config.rope_scaling.get("short_factor")
        if not long or not short or len(long) != len(short) or len(long) != config.rope_dims // 2:
            raise ConversionError(
                f"{path}: LongRoPE needs long_factor and short_factor of length {config.rope_dims // 2}."
            )
    return config


@functools.lru_cache(maxsize=8)
def _name_map(n_layers: int) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(ARCH, n_layers)


def gguf_tensor_name(hf_name: str, n_layers: int) -> str:
    """GGUF name of an HF tensor (``...weight`` kept), through gguf-py's own map."""
    base, _, suffix = hf_name.rpartition(".")
    mapped = _name_map(n_layers).get_name(base)
    if mapped is None:
        raise ConversionError(f"Tensor '{hf_name}' has no place in a Phi-3 GGUF.")
    return f"{mapped}.{suffix}"


def module_gguf_name(hf_module: str, n_layers: int) -> str:
    """GGUF weight name of a linear module, e.g. model.layers.0.self_attn.qkv_proj -> blk.0.attn_qkv.weight."""
    return gguf_tensor_name(f"{hf_module}.weight", n_layers)


def long_rope_tensors(config: Phi3Config) -> dict[str, np.ndarray]:
    if not config.rope_scaling:
        return {}
    return {
        gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight": np.asarray(
            config.rope_scaling["long_factor"], dtype=np.float32
        ),
        gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight": np.asarray(
            config.rope_scaling["short_factor"], dtype=np.float32
        ),
    }


def default_model_name(config: Phi3Config, adapter_name: str | None = None) -> str:
    """general.name, chosen deliberately.

    llama.cpp marks every special token but <unk>, <s> and <|endoftext|> as
    right-stripping only when general.name contains "phi3" or "phi-3". That is what
    Phi-3's own tokenizer does (rstrip on <|user|>, <|end|>, <|assistant|>), so
    other apps that tokenize the chat template text get the ids Phi-3 was trained
    on. The name therefore always contains "Phi-3", whatever the folder is called.
    """
    folder = config.folder.name or "model"
    name = folder if ("phi3" in folder.lower() or "phi-3" in folder.lower()) else f"Phi-3 {folder}"
    return f"{name} + {adapter_name}" if adapter_name else name


def write_model_metadata(writer: gguf.GGUFWriter, config: Phi3Config, name: str, file_type: int) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_positions)
    writer.add_rope_scaling_orig_ctx_len(config.original_max_positions)
    writer.add_embedding_length(config.hidden)
    writer.add_feed_forward_length(config.intermediate)
    writer.add_block_count(config.layers)
    writer.add_head_count(config.heads)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    writer.add_rope_dimension_count(config.rope_dims)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_sliding_window(config.sliding_window)
    if config.rope_scaling:
        scale = config.max_positions / config.original_max_positions
        attn_factor = math.sqrt(1 + math.log(scale) / math.log(config.original_max_positions)) if scale > 1 else 1.0
        writer.add_rope_scaling_attn_factors(attn_factor)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_vocab(writer: gguf.GGUFWriter, config: Phi3Config) -> None:
    """The sentencepiece vocabulary, added tokens and special ids, as llama.cpp expects them."""
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError:
        raise ConversionError("Converting a tokenizer needs the 'sentencepiece' package.") from None
    folder = config.folder
    model_file = folder / "tokenizer.model"
    if not model_file.exists():
        raise ConversionError(f"No tokenizer.model in {folder}: Phi-3 checkpoints ship a sentencepiece model.")
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(model_file))
    except (OSError, RuntimeError):
        raise ConversionError(f"{model_file} is damaged: sentencepiece could not read it.") from None
    vocab_size = config.vocab_size
    if sp.vocab_size() > vocab_size:
        raise ConversionError(f"tokenizer.model has {sp.vocab_size()} pieces but the model only {vocab_size} rows.")
    types = gguf.TokenType
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    toktypes = [types.UNUSED] * vocab_size
    for i in range(sp.vocab_size()):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        if sp.IsUnknown(i):
            toktypes[i] = types.UNKNOWN
        elif sp.IsControl(i):
            toktypes[i] = types.CONTROL
        elif sp.IsUnused(i):
            toktypes[i] = types.UNUSED
        elif sp.IsByte(i):
            toktypes[i] = types.BYTE
        else:
            toktypes[i] = types.NORMAL
    for token_id, content, special in _added_tokens(folder):
        # <unk>, <s>, </s> keep sentencepiece's own types. (llama.cpp's converter
        # retypes them from tokenizer_config.json, which makes Phi-3's </s> a
        # USER_DEFINED token that llama.cpp then matches even in plain user text.)
        if token_id >= vocab_size or (token_id < sp.vocab_size() and sp.IdToPiece(token_id) == content):
            continue
        tokens[token_id] = content.encode("utf-8")
        scores[token_id] = -1000.0
        toktypes[token_id] = types.CONTROL if special else types.USER_DEFINED
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(toktypes)
    # Whether sentencepiece puts a space in front of text, read from its behaviour.
    writer.add_add_space_prefix(sp.EncodeAsPieces("a")[0].startswith("\u2581"))
    gguf.SpecialVocab(folder, load_merges=False, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


def _added_tokens(folder: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) of the added tokens, from tokenizer_config.json, tokenizer.json or added_tokens.json."""
    found: dict[int, tuple[str, bool]] = {}
    added_json = folder / "added_tokens.json"
    if added_json.exists():
        for content, token_id in json.loads(added_json.read_text(encoding="utf-8")).items():
            found[int(token_id)] = (content, True)
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.exists():
        for entry in json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", []):
            found[int(entry["id"])] = (entry["content"], bool(entry.get("special", True)))
    config_json = folder / "tokenizer_config.json"
    if config_json.exists():
        for token_id, entry in (json.loads(config_json.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}).items():
            found[int(token_id)] = (entry["content"], bool(entry.get("special", True)))
    return [(token_id, content, special) for token_id, (content, special) in sorted(found.items())]
