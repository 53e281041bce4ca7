"""``lcm`` (LTH-MRS §4.4): the dense ticket's user/item tables, frozen, projected to d' = ⌈d·(1-s)⌉."""
from __future__ import annotations

import torch
from torch import nn

from recbole_lth import backbones
from recbole_lth.backbones.base import shrunk
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.masking import full_masks
from recbole_lth.engine import builder
from recbole_lth.methods.base import Method, each_target
from recbole_lth.sparse.budget import BudgetRow, clamp_note, no_distillation
from recbole_lth.sparse.distill import teacher_state


class ProjectedEmbedding(nn.Module):
    """An ``nn.Embedding`` stand-in for LCM: its table is a frozen teacher
    table mapped by a trainable linear layer, ``E = E_teacher W + b``
    (KD_on_Ranking's ``LightEmb``).  ``weight`` is the whole table, calling
    it looks rows up (projecting only those rows)."""

    def __init__(self, teacher_table: torch.Tensor, dim: int):
        super().__init__()
        self.register_buffer("teacher_table", teacher_table.detach().clone())
        self.transfer = nn.Linear(teacher_table.shape[1], dim)
        self.num_embeddings, self.embedding_dim = teacher_table.shape[0], dim

    @property
    def weight(self) -> torch.Tensor:
        return self.transfer(self.teacher_table)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.transfer(self.teacher_table[index])


def support(model_name: str):
    """The backbone's declared :class:`~recbole_lth.backbones.base.Lcm`: which tables, which width key."""
    return backbones.require(model_name, "lcm", "lcm")


def deployed_state(state: dict) -> dict:
    """What an LCM ticket deploys: the projected tables E = E_teacher·W + b as
    the model's own embedding weights (n × d′); the frozen teacher table is
    needed to train, not to serve."""
    state = dict(state)
    tables = [key[:-len(".teacher_table")] for key in state if key.endswith(".teacher_table")]
    for name in tables:
        table = state.pop(f"{name}.teacher_table")
        weight, bias = state.pop(f"{name}.transfer.weight"), state.pop(f"{name}.transfer.bias")
        state[f"{name}.weight"] = table @ weight.T + bias
    return state


def plan(run) -> None:
    teacher = teacher_state(run)  # kd_teacher if set, else the run's dense ticket
    declared = support(run.config["model"])
    full_numel = {n: p.numel() for n, p in run.prunable.items()}

    def ticket(index, sparsity, key):
        dim = shrunk(run.config[declared.width_key], sparsity)
        model = builder.new_model(run.config, run.train_data.dataset, {declared.width_key: dim})
        builder.seed(run.config)
        for name in declared.tables:
            setattr(model, name, ProjectedEmbedding(teacher[f"{name}.weight"].to(run.device), dim).to(run.device))
        # The mask core needs tensors to report on: the (never pruned) projections.
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2}
        table_numel = {f"{name}.weight": getattr(model, name).num_embeddings * dim for name in declared.tables}
        reached = 1.0 - sum(table_numel.values()) / sum(full_numel.values())
        return run.with_model(model, trainable), dict(
            masks=full_masks(trainable), start_state=run.saved_init(key, model),
            note=f"lcm, d'={dim}" + clamp_note(sparsity, reached),
            hooks=(BudgetRow(full_numel, table_numel, model, override_active=True),),
        )

    each_target(run, ticket)


def check(settings: dict) -> None:
    support(settings.get("model"))
    no_distillation(settings, "lcm")
    if settings.get("prune_params") != "embeddings":
        raise ConfigError("prune_params", settings.get("prune_params"),
                          "embeddings (lcm's budget is the embedding tables)")


METHOD = Method(
    "lcm", "baseline (BPR, LightGCN, NGCF): the dense ticket's user/item tables frozen and mapped to d′ = ⌈d·(1−s)⌉ "
    "by trainable linear maps (LTH-MRS §4.4)", plan, check=check, sparsities=lambda settings: [],
    dense="teacher", deploys="projected",
)
