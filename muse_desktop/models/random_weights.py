"""Seeded random tensors for the models MUsE builds to be run, not to answer well.

The demo Phi-3 checkpoint (:mod:`muse_desktop.models.demo_model`) and the whisper.cpp test
model (:mod:`muse_desktop.models.whisper_demo`) draw every weight from here, so one seed
gives the same file on every machine, with numpy alone (no torch).
"""

from __future__ import annotations

import math

import numpy as np


class RandomWeights:
    """float32 tensors from one seeded generator, drawn in the order they are asked for."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def normal(self, *dims: int, scale: float = 1.0, draw=np.float64) -> np.ndarray:
        """Standard normal values times ``scale`` (``draw``: the precision they are drawn in)."""
        return (self.rng.standard_normal(dims, dtype=draw) * scale).astype(np.float32)

    def dense(self, rows: int, cols: int) -> np.ndarray:
        """A linear layer's weight, scaled by 1/sqrt(fan-in) so activations keep their size."""
        return (self.rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32)

    def norm(self, width: int, spread: float = 0.1) -> np.ndarray:
        """A norm's weight near one, not all ones (so a converter that drops a norm shows)."""
        return (1.0 + spread * self.rng.standard_normal(width)).astype(np.float32)
