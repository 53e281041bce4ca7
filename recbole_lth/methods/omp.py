"""OMP: train dense once; per target, prune the trained weights to it in one shot, rewind, retrain."""
from __future__ import annotations

from recbole_lth.core import pruning
from recbole_lth.methods.base import Method, each_target


def plan(run) -> None:
    trained = run.dense()
    weights = trained.prunable_weights(list(run.prunable), run.device)

    def ticket(index, sparsity, key):
        masks = pruning.magnitude_prune(weights, run.full_masks(), sparsity, run.scope)
        return run, dict(masks=masks, start_state=run.rewind_state(), start_epoch=run.settings["rewind_epoch"])

    each_target(run, ticket)


METHOD = Method(
    "omp", "train dense once; per target prune the trained weights to it in one shot by |w|, rewind, retrain",
    plan, dense="reference",
)
