"""``dense``: the unpruned model through the same pipeline (the sparsity-0 row)."""
from __future__ import annotations

from recbole_lth.methods.base import Method


def plan(run) -> None:
    run.dense()


METHOD = Method("dense", "the unpruned model through the same pipeline (the sparsity-0 row)", plan,
                dense="reference", sparsities=lambda settings: [], tickets=lambda settings: 0)
