"""The chat engine: llama.cpp through llama-cpp-python, fed by the shared prompt contract.

No torch, transformers or peft on this path (a chat-only install has none).
"""
