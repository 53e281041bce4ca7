"""``dense``: the unpruned model through the same pipeline (the sparsity-0 row).

The run's dense ticket is also every method's reference, rewind source and
default teacher: :func:`dense_ticket` makes it (``api`` hands it to the
:class:`~recbole_lth.engine.run.Run`), once, or with ``dense_weight_decays``
as the best on validation of one dense ticket per value.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from recbole_lth.core import paths
from recbole_lth.engine.run import Ticket
from recbole_lth.methods.base import Method

logger = logging.getLogger("recbole_lth")


def dense_ticket(run) -> Ticket:
    """The run's dense ticket; with ``dense_weight_decays`` the best on
    validation of one dense ticket per value (each its own row)."""
    grid = run.settings.get("dense_weight_decays")
    if not grid:
        return run.ticket(run.dense_spec())
    candidates = [
        run.ticket(replace(run.dense_spec(), key=paths.dense_candidate(wd), capture_rewind=False, weight_decay=wd))
        for wd in grid
    ]
    chosen = run.stored(paths.DENSE_TICKET)
    created = chosen is None
    if created:
        metric = f"valid_{str(run.config['valid_metric']).lower()}"
        sign = 1 if run.config["valid_metric_bigger"] is not False else -1
        best = max(candidates, key=lambda t: sign * t.row.get(metric, float("-inf")))  # ties: the first
        row = {**best.row, "ticket": paths.DENSE_TICKET,
               "note": f"best on {metric} of dense_weight_decays {list(grid)}: weight_decay "
                       f"{best.row['weight_decay']:g} ({best.key})"}
        chosen = Ticket(paths.DENSE_TICKET, row, best.state_dict, best.masks)
        run.store(chosen)
        logger.info(f"dense ticket: {row['note']}")
    run.add_row(chosen.row, created)
    return chosen


def plan(run) -> None:
    run.dense()


METHOD = Method("dense", "the unpruned model through the same pipeline (the sparsity-0 row)", plan,
                dense="reference", sparsities=lambda settings: [], tickets=lambda settings: 0)
