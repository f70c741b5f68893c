"""MUsE Desktop: an offline assistant that adapts its answers to who you are.

Importing this package must stay cheap and must never pull in torch,
transformers, peft or Qt (a chat-only install carries none of the training
stack, and only :mod:`muse_desktop.ui` may touch Qt).
"""

__version__ = "0.1.0"
APP_NAME = "MUsE Desktop"
APP_ID = "muse-desktop"

__all__ = ["__version__", "APP_NAME", "APP_ID"]
