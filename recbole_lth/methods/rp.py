"""RP: per target, a uniformly random mask over the same initial weights, trained."""
from __future__ import annotations

from recbole_lth.core import pruning
from recbole_lth.methods.base import Method, each_target, ignore_rewind


def random_masks(run, index: int, sparsity: float) -> dict:
    """The random mask of target number ``index`` (seed ``seed + index``):
    DSL starts from the same one, so DSL without exploration is RP."""
    return pruning.random_mask(run.prunable, sparsity, run.scope, seed=run.config["seed"] + index)


def plan(run) -> None:
    ignore_rewind(run, "rp draws random masks over the initial weights")
    each_target(run, lambda index, sparsity, key: (
        run, dict(masks=random_masks(run, index, sparsity), start_state=run.init_state())))


METHOD = Method("rp", "per target a uniformly random mask over the same initial weights, trained", plan)
