"""Model-format converters shipped with MUsE Desktop (Hugging Face -> GGUF, LoRA, quantization).

A layer of its own, between the app's features and its ground floor: converters use
the ground floor (events, atomic files, processes, the prompt contract and its
tokenizer adapters) and nothing else of ``muse_desktop``; the features use converters.
The import contracts in pyproject.toml keep it so. UI-free, and importable without
torch (only verification against transformers needs the ``[train]`` extra).
"""
