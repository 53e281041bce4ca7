"""OMP: train dense once; per target, prune the trained weights to it in one shot, rewind, retrain."""
from __future__ import annotations

from recbole_lth.core import pruning
from recbole_lth.core.paths import target_ticket
from recbole_lth.engine.run import TicketSpec
from recbole_lth.methods.base import Method


def plan(run) -> None:
    trained = run.dense()
    weights = trained.prunable_weights(list(run.prunable), run.device)
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        masks = pruning.magnitude_prune(weights, run.full_masks(), sparsity, run.scope)
        run.ticket(TicketSpec(
            target_ticket(run.method, sparsity), round_idx=i, target_sparsity=sparsity, masks=masks,
            start_state=run.rewind_state(), start_epoch=run.settings["rewind_epoch"],
        ))


METHOD = Method(
    "omp", "train dense once; per target prune the trained weights to it in one shot by |w|, rewind, retrain",
    plan, dense="reference",
)
