"""``small_dense``: per target s, the same backbone with its prunable tables ⌈w·(1-s)⌉ wide, trained densely."""
from __future__ import annotations

from recbole_lth import builder
from recbole_lth.budget import BudgetRow, clamp_note, no_distillation, shrunk
from recbole_lth.errors import ConfigError
from recbole_lth.masking import select_prunable
from recbole_lth.methods.base import Method
from recbole_lth.paths import target_ticket


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


def plan(run) -> None:
    full_numel = {n: p.numel() for n, p in run.prunable.items()}
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        sizes = small_sizes(run.config, sparsity)
        model = builder.new_model(run.config, run.train_data.dataset, sizes)
        small = run.with_model(model, select_prunable(model, run.settings["prune_params"]))
        key = target_ticket(run.method, sparsity)
        table_numel = {n: p.numel() for n, p in small.prunable.items()}
        reached = 1.0 - sum(table_numel.values()) / sum(full_numel.values())
        small.ticket(
            key, round_idx=i, target_sparsity=sparsity, masks=small.full_masks(),
            start_state=run.saved_init(key, model),
            note="dense, " + ", ".join(f"{k}={v}" for k, v in sizes.items()) + clamp_note(sparsity, reached),
            hooks=(BudgetRow(full_numel, table_numel, model, override_active=False),),
        )


def check(settings: dict) -> None:
    no_distillation(settings, "small_dense")


METHOD = Method(
    "small_dense", "baseline: per target s the same backbone with its prunable tables ⌈d·(1−s)⌉ wide, trained "
    "densely (equal parameter budget)", plan, check=check, sparsities=lambda settings: [],
)
