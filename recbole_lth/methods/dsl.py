"""DSL: dynamic sparse learning at a fixed parameter budget (DSL paper, Alg. 1).

* Sparsity initialisation: the exact-count random mask RP draws for that
  target (same seed), over the model's initial weights.
* Sparse learning: RecBole's own training steps on the masked model.
* Dynamic exploration (:mod:`recbole_lth.dynamic`) every
  ``dsl_update_interval`` (ΔT) optimizer steps: drop the ``ρ_t`` fraction of
  the active weights by ``dsl_drop`` and regrow as many by ``dsl_grow``;
  ``ρ_t`` decays from ``dsl_init_ratio`` to 0 at ``T_end`` (``dsl_end_step``,
  default epochs × batches per epoch), after which the mask is frozen.
"""
from __future__ import annotations

import logging

from recbole_lth import dynamic
from recbole_lth.methods.base import Method
from recbole_lth.methods.rp import random_masks
from recbole_lth.paths import target_ticket
from recbole_lth.settings import choice_key, number_key

logger = logging.getLogger("recbole_lth")

KEYS = (
    number_key("dsl_update_interval", "ΔT: optimizer steps between explorations", 1, whole=True),
    number_key("dsl_init_ratio", "ρ0: fraction of the active weights exchanged at the first exploration",
               0.0, 1.0, low_open=True),
    choice_key("dsl_decay", "how ρ_t decays to 0 at T_end (the paper's Table 4)", dynamic.DECAYS),
    number_key("dsl_end_step", "T_end: the mask is frozen from this step; null: epochs x batches per epoch",
               1, whole=True, nullable=True),
    choice_key("dsl_drop", "which active weights are dropped: magnitude (smallest |w|)", dynamic.DROP_SCORES),
    choice_key("dsl_grow", "which inactive weights are regrown: gradient (largest |grad| of the update step's "
               "batch), accumulated_gradient (largest |sum of grads| since the last update), random (SET)",
               dynamic.GROW_SCORES),
)


def end_step(settings: dict, steps_per_epoch: int) -> int:
    """T_end: ``dsl_end_step``, or every step of ``epochs`` epochs."""
    return settings.get("dsl_end_step") or settings["epochs"] * steps_per_epoch


def explorer(run) -> dynamic.Explorer:
    settings = run.settings
    schedule = dynamic.Schedule(
        settings["dsl_update_interval"], settings["dsl_init_ratio"],
        end_step(settings, len(run.train_data)), settings["dsl_decay"],
    )
    return dynamic.Explorer(
        schedule, run.scope, drop=dynamic.DROP_SCORES[settings["dsl_drop"]],
        grow=dynamic.GROW_SCORES[settings["dsl_grow"]](),
    )


def plan(run) -> None:
    if run.settings["rewind_epoch"]:
        logger.warning("dsl trains from the initial weights; rewind_epoch is ignored")
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        run.ticket(
            target_ticket("dsl", sparsity), round_idx=i, target_sparsity=sparsity,
            masks=random_masks(run, i, sparsity), start_state=run.init_state(), hooks=(explorer(run),),
        )


METHOD = Method(
    "dsl", "per target RP's random mask trained at that fixed budget with dynamic exploration: every ΔT steps "
    "drop the ρ_t smallest-|w| active weights and regrow as many inactive ones by |grad| (DSL, Alg. 1)",
    plan, keys=KEYS,
)
