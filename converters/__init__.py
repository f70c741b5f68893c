"""Model-format converters shipped with MUsE Desktop (Hugging Face -> GGUF, LoRA, quantization).

A package of its own: UI-free, and importable without torch (only verification
against transformers needs the ``[train]`` extra).
"""
