"""``small_dense``: per target s, the same backbone with its prunable tables ⌈w·(1-s)⌉ wide, trained densely."""
from __future__ import annotations

from recbole_lth import backbones
from recbole_lth.engine import builder
from recbole_lth.methods.base import Method, each_target
from recbole_lth.sparse.budget import BudgetRow, clamp_note, no_distillation


def small_sizes(config, sparsity: float) -> dict:
    """The config values that shrink the model's prunable tables to (1-s):
    its backbone's declared width keys (``Backbone.widths``)."""
    return backbones.require(config["model"], "widths", "small_dense")(config, sparsity)


def plan(run) -> None:
    full_numel = {n: p.numel() for n, p in run.prunable.items()}

    def ticket(index, sparsity, key):
        sizes = small_sizes(run.config, sparsity)
        model = builder.new_model(run.config, run.train_data.dataset, sizes)
        small = run.with_model(model, backbones.prunable(model, run.settings["prune_params"]))
        table_numel = {n: p.numel() for n, p in small.prunable.items()}
        reached = 1.0 - sum(table_numel.values()) / sum(full_numel.values())
        return small, dict(
            masks=small.full_masks(), start_state=run.saved_init(key, model),
            note="dense, " + ", ".join(f"{k}={v}" for k, v in sizes.items()) + clamp_note(sparsity, reached),
            hooks=(BudgetRow(full_numel, table_numel, model, override_active=False),),
        )

    each_target(run, ticket)


def check(settings: dict) -> None:
    backbones.require(settings.get("model"), "widths", "small_dense")
    no_distillation(settings, "small_dense")


METHOD = Method(
    "small_dense", "baseline: per target s the same backbone with its prunable tables ⌈d·(1−s)⌉ wide, trained "
    "densely (equal parameter budget)", plan, check=check, sparsities=lambda settings: [], deploys="smaller",
)
