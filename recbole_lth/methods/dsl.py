"""DSL: dynamic sparse learning at a fixed parameter budget (DSL paper, Alg. 1).

* Sparsity initialisation: the exact-count random mask RP draws for that
  target (same seed), over the model's initial weights.
* Sparse learning: RecBole's own training steps on the masked model.
* Dynamic exploration (:mod:`recbole_lth.sparse.dynamic`) every ΔT
  (``dsl_update_epochs``) epochs' worth of optimizer steps: drop the ``ρ_t``
  fraction of the active weights by ``dsl_drop`` and regrow as many by
  ``dsl_grow``; ``ρ_t`` decays from ``dsl_init_ratio`` to 0 at ``T_end``
  (``dsl_end_epoch``), after which the mask is frozen.  Early stopping counts
  only from T_end, so the exploration schedule always runs.
"""
from __future__ import annotations

from recbole_lth.core.errors import ConfigError
from recbole_lth.core.settings import bool_key, choice_key, number_key
from recbole_lth.methods.base import Method, each_target, ignore_rewind
from recbole_lth.methods.rp import random_masks
from recbole_lth.sparse import dynamic

KEYS = (
    number_key("dsl_update_epochs", "ΔT in epochs: explorations happen every round(ΔT x batches per epoch) "
               "optimizer steps", 0, low_open=True),
    number_key("dsl_end_epoch", "T_end in epochs: the mask is frozen from then on, and early stopping counts "
               "only from then; null: epochs", 0, low_open=True, nullable=True),
    number_key("dsl_init_ratio", "ρ0: fraction of the active weights exchanged at the first exploration",
               0.0, 1.0, low_open=True),
    choice_key("dsl_decay", "how ρ_t decays to 0 at T_end (the paper's Table 4)", dynamic.DECAYS),
    choice_key("dsl_drop", "which active weights are dropped: magnitude (smallest |w|)", dynamic.DROP_SCORES),
    choice_key("dsl_grow", "which inactive weights are regrown: cumulative_gradient (largest |sum of grads| "
               "since training began), accumulated_gradient (since the last exploration), gradient (the paper's: "
               "the update step's batch only), momentum (the optimizer's first moment, the authors' code's other "
               "mode; needs dsl_optimizer_state warm), random (SET)", dynamic.GROW_SCORES),
    number_key("dsl_min_ratio", "ρ's floor until T_end: ρ_t = floor + (ρ0 - floor)·decay (the authors' code: "
               "0.005, with T_end the last epoch)", 0.0, 1.0, high_open=True),
    choice_key("dsl_optimizer_state", "fresh: a regrown weight starts at 0 with zero optimizer state (gradients "
               "masked); warm (the authors' code): gradients never masked, weights zeroed after each step, so "
               "Adam's moments keep tracking inactive weights", ("fresh", "warm")),
    bool_key("dsl_regrow_dropped", "a weight dropped at an exploration may be regrown at the same one, keeping "
             "its value (the authors' code; the default since 0.2.0, measured better on 7 of 8 backbone/data/"
             "sparsity pairs); False: dropped and regrown sets are disjoint"),
)


def check(settings: dict) -> None:
    if settings["dsl_grow"] in dynamic.NEEDS_WARM_STATE and settings["dsl_optimizer_state"] != "warm":
        raise ConfigError("dsl_optimizer_state", settings["dsl_optimizer_state"],
                          f"warm with dsl_grow {settings['dsl_grow']} (it reads the optimizer's state at inactive "
                          "weights, which only a warm state keeps)")
    if settings["dsl_min_ratio"] >= settings["dsl_init_ratio"]:
        raise ConfigError("dsl_min_ratio", settings["dsl_min_ratio"],
                          f"a number in [0, dsl_init_ratio = {settings['dsl_init_ratio']})")


def schedule(settings: dict, steps_per_epoch: int) -> dynamic.Schedule:
    """ΔT and T_end in optimizer steps, from their values in epochs (so the
    schedule means the same on a small and a large dataset)."""
    end_epoch = settings.get("dsl_end_epoch") or settings["epochs"]
    return dynamic.Schedule(
        interval=max(1, round(settings["dsl_update_epochs"] * steps_per_epoch)),
        init_ratio=settings["dsl_init_ratio"],
        end_step=max(1, round(end_epoch * steps_per_epoch)),
        decay=settings["dsl_decay"],
        min_ratio=settings["dsl_min_ratio"],
    )


def explorer(run) -> dynamic.Explorer:
    settings = run.settings
    return dynamic.Explorer(
        schedule(settings, len(run.train_data)), run.scope, drop=dynamic.DROP_SCORES[settings["dsl_drop"]],
        grow=dynamic.GROW_SCORES[settings["dsl_grow"]](),
        regrow_dropped=settings["dsl_regrow_dropped"], warm_state=settings["dsl_optimizer_state"] == "warm",
    )


def plan(run) -> None:
    ignore_rewind(run, "dsl trains from the initial weights")
    each_target(run, lambda index, sparsity, key: (
        run, dict(masks=random_masks(run, index, sparsity), start_state=run.init_state(), hooks=(explorer(run),))))


METHOD = Method(
    "dsl", "per target RP's random mask trained at that fixed budget with dynamic exploration: every ΔT epochs "
    "drop the ρ_t smallest-|w| active weights and regrow as many inactive ones by their gradient (DSL, Alg. 1); "
    "early stopping counts from T_end",
    plan, keys=KEYS, check=check, scopes=("global", "per_table"),
)
