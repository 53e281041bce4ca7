"""IMP (lottery tickets, LTH-MRS Alg. 1) and WR, its no-rewind control.

Round 0 is the run's dense ticket; each round prunes ``prune_rate`` of the
surviving weights by magnitude (of the previous round's best-on-validation
weights, never reviving a pruned one) and retrains: IMP from the rewound
weights (initial, or after ``rewind_epoch``), WR from the trained ones.
"""
from __future__ import annotations

from recbole_lth.core import pruning
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.paths import round_ticket
from recbole_lth.engine.run import TicketSpec
from recbole_lth.methods.base import Method


def planned_rounds(settings: dict) -> int:
    limits = []
    if settings.get("rounds") is not None:
        limits.append(settings["rounds"])
    if settings.get("target_sparsity") is not None:
        limits.append(pruning.imp_rounds_to(settings["prune_rate"], settings["target_sparsity"]))
    return min(limits) if limits else 0


def round_sparsities(settings: dict) -> list[float]:
    """The sparsity of every pruned round, 1-(1-p)^r."""
    return [pruning.imp_sparsity(settings["prune_rate"], r) for r in range(1, planned_rounds(settings) + 1)]


def iterate(run, rewind: bool) -> None:
    settings, names = run.settings, list(run.prunable)
    start_epoch = settings["rewind_epoch"] if rewind else 0
    previous = run.dense()
    for r, sparsity in enumerate(round_sparsities(settings), start=1):
        masks = pruning.magnitude_prune(
            previous.prunable_weights(names, run.device), previous.device_masks(run.device), sparsity, run.scope
        )
        start = run.rewind_state() if rewind else previous.state_dict
        previous = run.ticket(TicketSpec(
            round_ticket(run.method, r), round_idx=r, target_sparsity=sparsity, masks=masks,
            start_state=start, start_epoch=start_epoch,
        ))


def imp(run) -> None:
    iterate(run, rewind=True)


def wr(run) -> None:
    iterate(run, rewind=False)


def check(settings: dict) -> None:
    if settings.get("rounds") is None and settings.get("target_sparsity") is None:
        raise ConfigError("rounds", None, "a whole number >= 0 when target_sparsity is null")


IMP = Method(
    "imp", "the dense ticket is round 0; each round prunes prune_rate of the survivors by |w|, rewinds them and "
    "retrains (lottery tickets, LTH-MRS Alg. 1)", imp, check=check, dense="reference", iterative=True,
    sparsities=round_sparsities, sparsity_key="prune_rate", tickets=planned_rounds,
)
WR = Method(
    "wr", "as imp without rewinding: survivors continue from their trained values", wr, check=check,
    dense="reference", iterative=True, sparsities=round_sparsities, sparsity_key="prune_rate", tickets=planned_rounds,
)
