"""RP: per target, a uniformly random mask over the same initial weights, trained."""
from __future__ import annotations

from recbole_lth.core import pruning
from recbole_lth.core.paths import target_ticket
from recbole_lth.engine.run import TicketSpec
from recbole_lth.methods.base import Method, ignore_rewind


def random_masks(run, index: int, sparsity: float) -> dict:
    """The random mask of target number ``index`` (seed ``seed + index``):
    DSL starts from the same one, so DSL without exploration is RP."""
    return pruning.random_mask(run.prunable, sparsity, run.scope, seed=run.config["seed"] + index)


def plan(run) -> None:
    ignore_rewind(run, "rp draws random masks over the initial weights")
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        run.ticket(TicketSpec(
            target_ticket(run.method, sparsity), round_idx=i, target_sparsity=sparsity,
            masks=random_masks(run, i, sparsity), start_state=run.init_state(),
        ))


METHOD = Method("rp", "per target a uniformly random mask over the same initial weights, trained", plan)
