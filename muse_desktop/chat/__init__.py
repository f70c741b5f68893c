"""Talking: the llama.cpp chat engine fed by the shared prompt contract, the user types, and the
store of people, conversations, the model library, preferences and comparisons.

No torch, transformers or peft on this path (a chat-only install has none).
"""
