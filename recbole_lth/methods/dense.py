"""``dense``: the unpruned model through the same pipeline (the sparsity-0 row)."""
from __future__ import annotations

from recbole_lth.methods.base import Method
from recbole_lth.paths import DENSE_TICKET


def plan(run) -> None:
    run.dense()


METHOD = Method("dense", "the unpruned model through the same pipeline (the sparsity-0 row)", plan,
                dense_reference=DENSE_TICKET, sparsities=lambda settings: [], tickets=lambda settings: 0)
