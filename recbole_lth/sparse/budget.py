"""Dense baselines at a ticket's parameter budget: widths and their results columns.

A baseline trains a second, smaller model through ``Run.ticket``; its rows
are read against the full model: ``prunable_params`` is the full model's
selected-table size, ``active_params``/``nonzero_params`` the baseline's
table size over the same tables, ``sparsity`` = 1 - their ratio, and
``trainable_params`` what the optimizer updates.
"""
from __future__ import annotations

from torch import nn

from recbole_lth.core.errors import ConfigError
from recbole_lth.engine.run import TicketHook


def clamp_note(target: float, reached: float) -> str:
    """Whole widths reach a target only to within one column; say so when the
    gap is more than that (a width of 1 is the floor)."""
    if abs(reached - target) < 0.02:
        return ""
    return f"; target {target:g} clamps to sparsity {reached:.4g} (whole widths, at least 1)"


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class BudgetRow(TicketHook):
    """Results fields of a baseline, against the full model's selected tables."""

    def __init__(self, full_numel: dict, table_numel: dict, model: nn.Module, override_active: bool):
        self.full_numel = full_numel
        self.table_numel = table_numel
        self.model = model
        self.override_active = override_active

    def row_fields(self) -> dict:
        full, tables = sum(self.full_numel.values()), sum(self.table_numel.values())
        fields = {
            "sparsity": round(1.0 - tables / full, 6),
            **{
                f"sparsity[{n}]": round(1.0 - self.table_numel[n] / size, 6)
                for n, size in self.full_numel.items() if n in self.table_numel
            },
            "prunable_params": full,
            "trainable_params": trainable(self.model),
        }
        if self.override_active:
            fields["active_params"] = fields["nonzero_params"] = tables
        return fields


def no_distillation(settings: dict, method: str) -> None:
    if settings.get("kd_weight"):
        raise ConfigError("kd_weight", settings["kd_weight"], f"0 ({method} is a baseline trained without distillation)")
