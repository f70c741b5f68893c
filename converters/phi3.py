"""What a Phi-3 family checkpoint is, and how it is described in GGUF.

Facts checked against llama.cpp's own converter: HF's fused layout
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


# config.json keys that cannot change the logits of a converted model (training-time
# dropout, bookkeeping, generation defaults). Anything else that is not read below is
# reported, so a new key from a future transformers is never ignored without a word.
HARMLESS_CONFIG_KEYS = frozenset({
    "_name_or_path", "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype",
    "attention_dropout", "embd_pdrop", "resid_pdrop", "initializer_range", "use_cache", "bos_token_id",
    "eos_token_id", "pad_token_id", "output_attentions", "output_hidden_states", "return_dict", "tie_encoder_decoder",
    "is_encoder_decoder", "chunk_size_feed_forward", "problem_type", "id2label", "label2id", "tokenizer_class",
    "prefix", "task_specific_params", "finetuning_task", "cross_attention_hidden_size", "add_cross_attention",
    "is_decoder", "pruned_heads", "torchscript", "use_return_dict", "attn_implementation", "_attn_implementation",
    "layer_types", "max_window_layers", "use_sliding_window", "name_or_path",
})
# Keys this reader understands (their values are checked below).
READ_CONFIG_KEYS = frozenset({
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size", "max_position_embeddings", "original_max_position_embeddings", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "partial_rotary_factor", "head_dim", "tie_word_embeddings",
    "sliding_window", "hidden_act", "attention_bias", "mlp_bias", "quantization_config",
})
LONG_ROPE_TYPES = ("longrope", "su")  # "su" is the older name Phi-3 checkpoints used
PLAIN_ROPE_TYPES = ("default", "")
# transformers' Phi3Config default when a checkpoint does not say.
DEFAULT_ORIGINAL_CONTEXT = 4096


@dataclass(frozen=True)
class LongRope:
    """LongRoPE settings, whichever form config.json used."""

    long_factor: tuple[float, ...]
    short_factor: tuple[float, ...]
    attention_factor: float


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
    long_rope: LongRope | None
    tie_embeddings: bool
    unknown_keys: tuple[str, ...] = ()

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def rope_dims(self) -> int:
        return self.head_dim  # partial rotary factors other than 1 are refused

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


def _refuse(path: Path, key: str, why: str) -> ConversionError:
    return ConversionError(f"{path}: '{key}' {why}, which MUsE Desktop cannot convert exactly.")


def _one_value(path: Path, key: str, *candidates: tuple[str, object]):
    """The value ``key`` has wherever it is given; two places that disagree are refused."""
    given = [(where, value) for where, value in candidates if value is not None]
    if len({json.dumps(value, sort_keys=True) for _, value in given}) > 1:
        places = " and ".join(f"{where} = {value!r}" for where, value in given)
        raise ConversionError(f"{path}: {key} is given twice with different values ({places}).")
    return given[0][1] if given else None


def _rope_settings(path: Path, raw: dict, max_positions: int, head_dim: int):
    """(theta, original context, LongRope or None) from either form of config.json.

    transformers 4.x writes ``rope_scaling`` (``type`` or ``rope_type``) and
    ``rope_theta`` at the top level; transformers 5 writes ``rope_parameters``
    (``rope_type``, ``rope_theta``, the factors, ``original_max_position_embeddings``,
    ``partial_rotary_factor``) and no ``rope_scaling``. Reading only one form writes
    a LongRoPE model without its factors, silently.
    """
    scaling = raw.get("rope_scaling")
    params = raw.get("rope_parameters")
    for key, value in (("rope_scaling", scaling), ("rope_parameters", params)):
        if value is not None and not isinstance(value, dict):
            raise ConversionError(f"{path}: '{key}' should be a set of settings, not {value!r}.")
    scaling, params = scaling or {}, params or {}

    def kind_of(section: dict) -> str | None:
        kind = section.get("rope_type", section.get("type"))
        return None if kind is None else str(kind).lower()

    kinds = {k for k in (kind_of(scaling), kind_of(params)) if k is not None}
    kinds = {"longrope" if k in LONG_ROPE_TYPES else k for k in kinds}
    if len(kinds) > 1:
        raise ConversionError(f"{path}: rope_scaling and rope_parameters name different rope types ({', '.join(sorted(kinds))}).")
    kind = kinds.pop() if kinds else "default"
    where = "rope_parameters.rope_type" if kind_of(params) else "rope_scaling.type"
    if kind not in ("longrope", *PLAIN_ROPE_TYPES):
        raise _refuse(path, where, f"is '{kind}', a rope scaling other than LongRoPE")
    partial = _one_value(path, "partial_rotary_factor", ("partial_rotary_factor", raw.get("partial_rotary_factor")),
                         ("rope_parameters.partial_rotary_factor", params.get("partial_rotary_factor")))
    if partial is not None and float(partial) != 1.0:
        raise _refuse(path, "partial_rotary_factor", f"is {partial} (rotary embeddings on part of each head)")
    theta = _one_value(path, "rope_theta", ("rope_theta", raw.get("rope_theta")),
                       ("rope_parameters.rope_theta", params.get("rope_theta")),
                       ("rope_scaling.rope_theta", scaling.get("rope_theta")))
    original = _one_value(
        path, "original_max_position_embeddings",
        ("original_max_position_embeddings", raw.get("original_max_position_embeddings")),
        ("rope_parameters.original_max_position_embeddings", params.get("original_max_position_embeddings")),
        ("rope_scaling.original_max_position_embeddings", scaling.get("original_max_position_embeddings")),
    )
    theta = float(theta) if theta is not None else 10000.0
    if kind != "longrope":
        for section_name, section in (("rope_scaling", scaling), ("rope_parameters", params)):
            extra = sorted(set(section) - {"rope_type", "type", "rope_theta", "partial_rotary_factor",
                                           "original_max_position_embeddings"})
            if extra:
                raise _refuse(path, f"{section_name}.{extra[0]}", "is set on a model without rope scaling")
        return theta, int(original) if original else max_positions, None
    section = params if params.get("long_factor") is not None else scaling
    name = "rope_parameters" if section is params else "rope_scaling"
    for key in section:
        if key not in ("rope_type", "type", "rope_theta", "partial_rotary_factor", "original_max_position_embeddings",
                       "long_factor", "short_factor", "factor", "attention_factor"):
            raise _refuse(path, f"{name}.{key}", "is a LongRoPE setting this converter does not know")
    original = int(original) if original else DEFAULT_ORIGINAL_CONTEXT
    long, short = (
        _one_value(path, key, (f"rope_scaling.{key}", scaling.get(key)), (f"rope_parameters.{key}", params.get(key)))
        for key in ("long_factor", "short_factor")
    )
    if not long or not short or len(long) != len(short) or len(long) != head_dim // 2:
        raise ConversionError(f"{path}: LongRoPE needs {name}.long_factor and short_factor of length {head_dim // 2}.")
    # As transformers computes it: the factor from the two contexts unless given.
    factor = float(section.get("factor") or max_positions / original)
    if section.get("factor") is not None and not math.isclose(factor, max_positions / original):
        # llama.cpp derives the long/short switch from the contexts, not from this factor.
        raise _refuse(path, f"{name}.factor", f"is {factor:g}, not max_position_embeddings / original context")
    attention = section.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    rope = LongRope(tuple(float(x) for x in long), tuple(float(x) for x in short), float(attention))
    return theta, original, rope


def read_config(folder: str | Path) -> Phi3Config:
    """Read config.json (either transformers form) and refuse, up front, anything not converted exactly."""
    folder = Path(folder)
    path = folder / "config.json"
    raw = read_json(path, f"No config.json in {folder}: is this a Hugging Face model folder?")
    if not isinstance(raw, dict):
        raise ConversionError(f"{path} does not hold a model's settings.")
    architectures = raw.get("architectures") or [raw.get("model_type", "unknown")]
    if not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        raise ConversionError(
            f"{folder.name}: architecture {', '.join(map(str, architectures))} is not supported. "
            f"Supported: {', '.join(SUPPORTED_ARCHITECTURES)} (Phi-3 / Phi-3.5 mini, mini-128k, medium)."
        )
    if raw.get("quantization_config"):
        raise _refuse(path, "quantization_config", "says the weights are already quantized")
    if str(raw.get("hidden_act", "silu")).lower() != "silu":
        raise _refuse(path, "hidden_act", f"is '{raw['hidden_act']}' (Phi-3 uses silu)")
    for bias in ("attention_bias", "mlp_bias"):
        if raw.get(bias):
            raise _refuse(path, bias, "is on (Phi-3 layers have no bias)")
    try:
        hidden = int(raw["hidden_size"])
        heads = int(raw["num_attention_heads"])
        max_positions = int(raw["max_position_embeddings"])
        head_dim = raw.get("head_dim")
        if head_dim is not None and int(head_dim) != hidden // heads:
            raise _refuse(path, "head_dim", f"is {head_dim}, not hidden_size / num_attention_heads = {hidden // heads}")
        theta, original, long_rope = _rope_settings(path, raw, max_positions, hidden // heads)
        config = Phi3Config(
            folder=folder,
            raw=raw,
            hidden=hidden,
            layers=int(raw["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(raw.get("num_key_value_heads") or heads),
            intermediate=int(raw["intermediate_size"]),
            vocab_size=int(raw["vocab_size"]),
            max_positions=max_positions,
            original_max_positions=original,
            rms_eps=float(raw.get("rms_norm_eps", 1e-5)),
            rope_theta=theta,
            sliding_window=int(raw.get("sliding_window") or 0),
            long_rope=long_rope,
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            unknown_keys=tuple(sorted(set(raw) - HARMLESS_CONFIG_KEYS - READ_CONFIG_KEYS)),
        )
    except KeyError as exc:
        raise ConversionError(f"{path}: missing setting {exc}.") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConversionError):
            raise
        raise ConversionError(f"{path}: invalid setting ({exc}).") from None
    if config.hidden % config.heads or config.heads % config.kv_heads:
        raise ConversionError(f"{path}: hidden size, heads and KV heads do not divide evenly.")
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
    if config.long_rope is None:
        return {}
    return {
        gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight": np.asarray(
            config.long_rope.long_factor, dtype=np.float32
        ),
        gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight": np.asarray(
            config.long_rope.short_factor, dtype=np.float32
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
    if config.long_rope is not None:
        writer.add_rope_scaling_attn_factors(config.long_rope.attention_factor)
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
        raise ConversionError(
            f"No tokenizer.model in {folder}: the vocabulary comes from Phi-3's sentencepiece model, which "
            "transformers 5 no longer saves. Copy tokenizer.model from the base model's folder into this one."
        )
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
