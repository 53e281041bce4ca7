"""Dense baselines at each ticket's parameter budget: ``small_dense`` and ``lcm``.

Both train through ``Run.ticket`` (same trainer, selection on validation, test
at the best epoch, resume) on a second model built from the run's config, and
write their rows into the run's ``results.csv``.  Their rows are read against
the full model: ``prunable_params`` is the full model's selected-table size,
``active_params``/``nonzero_params`` the baseline's table size over the same
tables, ``sparsity`` = 1 - their ratio, and ``trainable_params`` what the
optimizer updates.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from recbole_lth import checkpoint
from recbole_lth.distill import check_target_sparsities, dense_ticket, teacher_state
from recbole_lth.errors import ConfigError
from recbole_lth.masking import full_masks, select_prunable
from recbole_lth.search import Run, TicketHook

LCM_MODELS = ("BPR", "LightGCN")


def shrunk(width: int, sparsity: float) -> int:
    """⌈width·(1-s)⌉: the width whose tables hold (1-s) of the parameters."""
    return math.ceil(width * (1.0 - sparsity) - 1e-9)


def small_sizes(config, sparsity: float) -> dict:
    """The config values that shrink the model's prunable tables to (1-s).

    BPR, LightGCN, CDAE: ``embedding_size`` (CDAE: h_user, h_item and the
    output layer all have it as one side).  NeuMF: ``mf_embedding_size`` and
    ``mlp_embedding_size`` (its MLP's input layer shrinks with them).
    MultiVAE: the first ``mlp_hidden_size`` entry, the one side of both
    item-sized layers (encoder input, decoder output).
    """
    model = config["model"]
    if model in ("BPR", "LightGCN", "CDAE"):
        return {"embedding_size": shrunk(config["embedding_size"], sparsity)}
    if model == "NeuMF":
        return {key: shrunk(config[key], sparsity) for key in ("mf_embedding_size", "mlp_embedding_size")}
    if model == "MultiVAE":
        hidden = list(config["mlp_hidden_size"])
        hidden[0] = shrunk(hidden[0], sparsity)
        return {"mlp_hidden_size": hidden}
    raise ConfigError("model", model, "BPR, LightGCN, NeuMF, MultiVAE, CDAE (small_dense)")


@contextmanager
def _config_values(config, values: dict):
    saved = {key: config[key] for key in values}
    for key, value in values.items():
        config[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            config[key] = value


def build_model(run: Run, values: dict) -> nn.Module:
    """A fresh model of the run's class with ``values`` set in the config
    (restored afterwards), seeded like the run's own model."""
    from recbole.utils import get_model, init_seed

    config = run.config
    with _config_values(config, values):
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, run.train_data.dataset)
    return model.to(run.device)


def saved_init(run: Run, model: nn.Module, key: str) -> dict:
    """The baseline model's initial weights, saved once and reloaded (as
    ``init_state.pt`` is for the full model)."""
    path = run.run_dir / f"{key}_init.pt"
    if not path.exists():
        checkpoint.save(path, state_dict=model.state_dict(), meta={"epoch": 0})
    return checkpoint.load(path)["state_dict"]


def _trainable(model: nn.Module) -> int:
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
            "trainable_params": _trainable(self.model),
        }
        if self.override_active:
            fields["active_params"] = fields["nonzero_params"] = tables
        return fields


def small_dense(run: Run) -> None:
    """For each target sparsity s, the same backbone with its prunable tables
    ⌈d·(1-s)⌉ wide, trained densely."""
    full_numel = {n: p.numel() for n, p in run.prunable.items()}
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        values = small_sizes(run.config, sparsity)
        model = build_model(run, values)
        small = replace(run, model=model, prunable=select_prunable(model, run.settings["prune_params"]))
        key = f"small_dense_{sparsity:.4f}"
        table_numel = {n: p.numel() for n, p in small.prunable.items()}
        small.ticket(
            key, round_idx=i, target_sparsity=sparsity, masks=small.full_masks(),
            start_state=saved_init(run, model, key),
            note="dense, " + ", ".join(f"{k}={v}" for k, v in values.items()),
            hooks=(BudgetRow(full_numel, table_numel, model, override_active=False),),
        )


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


def lcm(run: Run) -> None:
    """LCM (LTH-MRS §4.4): per target sparsity s, the dense model's user and
    item tables frozen and projected to d' = ⌈d·(1-s)⌉ by trainable linear maps."""
    from recbole.utils import init_seed

    config = run.config
    if run.settings.get("kd_teacher"):
        teacher = teacher_state(run, None)
    else:
        teacher = dense_ticket(run).state_dict
    full_numel = {n: p.numel() for n, p in run.prunable.items()}
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        dim = shrunk(config["embedding_size"], sparsity)
        model = build_model(run, {"embedding_size": dim})
        init_seed(config["seed"], config["reproducibility"])
        for name in ("user_embedding", "item_embedding"):
            table = teacher[f"{name}.weight"].to(run.device)
            setattr(model, name, ProjectedEmbedding(table, dim).to(run.device))
        # The mask core needs tensors to report on: the (never pruned) projections.
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2}
        projected = replace(run, model=model, prunable=trainable)
        key = f"lcm_{sparsity:.4f}"
        table_numel = {
            f"{name}.weight": getattr(model, name).num_embeddings * dim for name in ("user_embedding", "item_embedding")
        }
        projected.ticket(
            key, round_idx=i, target_sparsity=sparsity, masks=full_masks(trainable),
            start_state=saved_init(run, model, key), note=f"lcm, d'={dim}",
            hooks=(BudgetRow(full_numel, table_numel, model, override_active=True),),
        )


# ------------------------------------------------------------------ checks
def _no_distillation(settings: dict, method: str) -> None:
    if settings.get("kd_weight"):
        raise ConfigError("kd_weight", settings["kd_weight"], f"0 ({method} is a baseline trained without distillation)")


def check_small_dense(settings: dict) -> None:
    check_target_sparsities(settings)
    _no_distillation(settings, "small_dense")


def check_lcm(settings: dict) -> None:
    if settings.get("model") not in LCM_MODELS:
        raise ConfigError("model", settings.get("model"), f"{', '.join(LCM_MODELS)} (lcm projects user/item embedding tables)")
    check_target_sparsities(settings)
    _no_distillation(settings, "lcm")
    if settings.get("prune_params") != "embeddings":
        raise ConfigError("prune_params", settings.get("prune_params"), "embeddings (lcm's budget is the embedding tables)")
