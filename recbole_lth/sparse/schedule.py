"""Sparsity schedules: the sparsity a method steers to at an optimizer step.

A :class:`SparsitySchedule` is a small value: it leaves ``initial`` at step
``start``, reaches ``final`` at step ``end`` and stays there; in between its
``shape`` sets the path over the progress ``p = (t - start) / (end - start)``:

* ``cubic`` (Zhu & Gupta 2017, "To prune, or not to prune", eq. 1):
  ``s_t = s_f + (s_i - s_f) · (1 - p)³``: prunes fast while the weights are
  redundant, slowly as it nears the final sparsity;
* ``linear``: ``s_i + (s_f - s_i) · p``;
* ``cosine``: ``s_f + (s_i - s_f) · (1 + cos(π p)) / 2``;
* ``cubic_late``: ``s_i + (s_f - s_i) · p³``, the mirror of ``cubic``: prunes
  little while the model learns and most near the end (PEP's pressure).

``every`` (ΔT) says at which steps a method prunes: ``start``, every
``every`` steps after it, and ``end`` itself (so that ``final`` is reached
exactly even when ``end - start`` is not a multiple of ΔT).
Plain Python floats: a method calls it per step with no host sync.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def _cubic(initial: float, final: float, p: float) -> float:
    return final + (initial - final) * (1.0 - p) ** 3


def _linear(initial: float, final: float, p: float) -> float:
    return initial + (final - initial) * p


def _cosine(initial: float, final: float, p: float) -> float:
    return final + (initial - final) * 0.5 * (1.0 + math.cos(math.pi * p))


def _cubic_late(initial: float, final: float, p: float) -> float:
    return initial + (final - initial) * p ** 3


SHAPES = {"cubic": _cubic, "linear": _linear, "cosine": _cosine, "cubic_late": _cubic_late}
# The shapes a user picks for a gradual pruning run (gmp_schedule).
PRUNING_SHAPES = ("cubic", "linear", "cosine")


@dataclass(frozen=True)
class SparsitySchedule:
    """From ``initial`` at step ``start`` to ``final`` at step ``end`` along ``shape``, updated every ``every`` steps."""

    final: float
    end: float
    start: float = 0
    initial: float = 0.0
    shape: str = "cubic"
    every: int = 1

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {tuple(SHAPES)}, got {self.shape!r}")
        if self.every < 1 or self.end < self.start:
            raise ValueError(f"need every >= 1 and end >= start, got every={self.every}, "
                             f"start={self.start}, end={self.end}")

    def progress(self, step) -> float:
        """``(step - start) / (end - start)``, clamped to [0, 1] (a span under one step counts as one); 1 from ``end`` on."""
        if step >= self.end:
            return 1.0
        return min(1.0, max(0.0, (step - self.start) / max(1, self.end - self.start)))

    def at(self, step) -> float:
        """The sparsity at ``step``: ``initial`` before ``start``, ``final`` from ``end`` on."""
        return SHAPES[self.shape](self.initial, self.final, self.progress(step))

    def updates(self, step: int) -> bool:
        """Whether the mask is recomputed after ``step`` steps: ``start``, every ΔT after it, and ``end``."""
        if step < self.start or step > self.end:
            return False
        return step == self.end or (step - self.start) % self.every == 0
