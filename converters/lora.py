"""PEFT LoRA adapters: read, check against the base, and give each module's exact delta.

Everything here is what PEFT itself does for a plain LoRA on ``nn.Linear``:
``W' = W + scale * B @ A`` with ``scale = alpha / r`` (or ``alpha / sqrt(r)`` with
rsLoRA), ranks and alphas per module from ``rank_pattern`` / ``alpha_pattern``
(matched the way PEFT matches them), only the modules ``target_modules`` and
``layers_to_transform`` select. Adapters whose merge would not be exact
(DoRA, ``modules_to_save``, embedding LoRA, biases, a different base) are refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import ConversionError, read_json
from converters.phi3 import LINEAR_MODULES, Phi3Config
from converters.safetensors_io import SafetensorsFile

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class LoraModule:
    module: str  # HF module name, e.g. model.layers.0.self_attn.qkv_proj
    rank: int
    alpha: float
    scale: float  # what PEFT multiplies B @ A by
    a_name: str
    b_name: str

    @property
    def layer(self) -> int:
        return int(_LAYER.search(f".{self.module}.").group(1))


def _pattern_value(patterns: dict, module: str, default):
    # PEFT's get_pattern_key: the first pattern that matches the end of the module name.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _targeted(target_modules, module: str) -> bool:
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module) is not None
    return any(module == t or module.endswith("." + t) for t in target_modules or [])


# adapter_config.json settings that change what the adapter computes, across PEFT
# versions, with why a plain ``W + scale * B @ A`` would be wrong. Any other key is
# bookkeeping or training-only (dropout, EVA or orthogonal initialisation, VeLoRA's
# backward pass) and is accepted.
_INEXACT_FLAGS = {
    "use_dora": "DoRA's magnitude vectors change the merged weights non-linearly",
    "modules_to_save": "it also trains whole modules",
    "lora_bias": "it trains LoRA biases",
    "fan_in_fan_out": "it is for Conv1D layers, not Phi-3's linear layers",
    "layer_replication": "it replicates layers",
    "trainable_token_indices": "it trains token embeddings",
    "target_parameters": "it targets raw parameters",
    "alora_invocation_tokens": "activated LoRA applies only after its invocation tokens",
    "use_qalora": "QA-LoRA pools the layer's inputs",
    "arrow_config": "Arrow routes between several adapters per token",
    "use_bdlora": "block-diagonal LoRA factors",
    "monteclora_config": "Monte Carlo LoRA samples its factors",
    "kasa_config": "KaSA changes the base weights by SVD",
    "megatron_config": "it was made for Megatron's parallel layers",
}
# Initialisations that rewrite the base weights: the adapter is only exact on that rewritten base.
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga", "mica")


def inexact_settings(config: dict) -> list[tuple[str, str]]:
    """(key, why) for every setting of ``config`` that a plain merge would get wrong."""
    found = [(key, why) for key, why in _INEXACT_FLAGS.items() if config.get(key)]
    if str(config.get("bias") or "none").lower() != "none":
        found.append(("bias", f"it trains the base layers' biases ({config['bias']})"))
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        found.append(("init_lora_weights", f"'{init}' initialisation rewrites the base weights"))
    return found


class LoraAdapter:
    """A PEFT LoRA adapter folder, checked against a base model's config."""

    def __init__(self, folder: str | Path, base: Phi3Config):
        self.folder = Path(folder)
        self.config = self._read_config()
        self._refuse_inexact()
        self.weights = self._open_weights()
        self.modules = self._collect(base)

    def _read_config(self) -> dict:
        config = read_json(self.folder / ADAPTER_CONFIG,
                           f"No {ADAPTER_CONFIG} in {self.folder}: is this a PEFT adapter folder?")
        if str(config.get("peft_type", "LORA")).upper() != "LORA":
            raise ConversionError(f"{self.folder.name} is a {config.get('peft_type')} adapter; only LoRA can be merged.")
        return config

    def _refuse_inexact(self) -> None:
        reasons = [f"'{key}' is set: {why}" for key, why in inexact_settings(self.config)]
        if reasons:
            raise ConversionError(f"Cannot merge {self.folder.name} exactly: " + "; ".join(reasons) + ".")

    def _open_weights(self) -> SafetensorsFile:
        path = self.folder / ADAPTER_WEIGHTS
        if not path.exists():
            if (self.folder / "adapter_model.bin").exists():
                raise ConversionError(
                    f"{self.folder.name} has only adapter_model.bin, a pickle file. MUsE Desktop never unpickles "
                    "files; save the adapter with safe_serialization=True."
                )
            raise ConversionError(f"No {ADAPTER_WEIGHTS} in {self.folder}.")
        return SafetensorsFile(path)

    def _collect(self, base: Phi3Config) -> dict[str, LoraModule]:
        c = self.config
        pairs: dict[str, dict[str, str]] = {}
        embedding = [name for name in self.weights.tensors if "lora_embedding" in name]
        if embedding:
            raise ConversionError(f"Cannot merge {self.folder.name} exactly: it has LoRA on embeddings ({embedding[0]}).")
        for name in self.weights.tensors:
            match = _KEY.match(name)
            if not match:
                raise ConversionError(f"{self.folder.name}: unexpected tensor '{name}' (not a LoRA A/B weight).")
            pairs.setdefault(match["module"], {})[match["which"]] = name
        if not pairs:
            raise ConversionError(f"{self.folder.name}: the adapter has no LoRA weights.")
        expected = base.expected_tensors()
        layers = c.get("layers_to_transform")
        if isinstance(layers, int):
            layers = [layers]
        modules: dict[str, LoraModule] = {}
        for module, names in sorted(pairs.items()):
            if set(names) != {"A", "B"}:
                raise ConversionError(f"{self.folder.name}: module {module} has lora_{next(iter(names))} but not its pair.")
            if not any(module.endswith(suffix) for suffix in LINEAR_MODULES) or f"{module}.weight" not in expected:
                raise ConversionError(
                    f"{self.folder.name}: LoRA on '{module}' cannot be used; only Phi-3's "
                    f"{', '.join(s.split('.')[-1] for s in LINEAR_MODULES)} layers are supported."
                )
            if not _targeted(c.get("target_modules"), module):
                raise ConversionError(f"{self.folder.name}: weights for {module}, which target_modules does not select.")
            lora = self._module(module, names, expected[f"{module}.weight"])
            if layers is not None and lora.layer not in layers:
                raise ConversionError(
                    f"{self.folder.name}: weights for layer {lora.layer}, outside layers_to_transform {layers}."
                )
            modules[module] = lora
        return modules

    def _module(self, module: str, names: dict[str, str], base_shape: tuple[int, ...]) -> LoraModule:
        c = self.config
        a_shape = self.weights.tensors[names["A"]].shape
        b_shape = self.weights.tensors[names["B"]].shape
        rank = int(_pattern_value(c.get("rank_pattern") or {}, module, c.get("r", 8)))
        alpha = float(_pattern_value(c.get("alpha_pattern") or {}, module, c.get("lora_alpha", 8)))
        out_features, in_features = base_shape
        if a_shape != (rank, in_features) or b_shape != (out_features, rank):
            raise ConversionError(
                f"{self.folder.name} does not fit this base model: {module} has A {list(a_shape)} and "
                f"B {list(b_shape)}, the base layer is {list(base_shape)} with rank {rank}. "
                "Was it trained on a different model?"
            )
        scale = alpha / math.sqrt(rank) if c.get("use_rslora") else alpha / rank
        return LoraModule(module, rank, alpha, scale, names["A"], names["B"])

    def factors(self, module: str) -> tuple[np.ndarray, np.ndarray]:
        """A [r, in] and B [out, r] as float32."""
        lora = self.modules[module]
        return self.weights.float32(lora.a_name), self.weights.float32(lora.b_name)

    def delta(self, module: str) -> np.ndarray:
        """scale * B @ A in float32, the exact amount PEFT's merge adds."""
        a, b = self.factors(module)
        return (b @ a) * np.float32(self.modules[module].scale)
