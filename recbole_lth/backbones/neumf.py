"""NeuMF: GMF and MLP towers over two pairs of tables, scored pair by pair."""
from __future__ import annotations

import torch

from recbole_lth.backbones.base import Backbone, Scores, Term, keeps_lookups, linears, shrunk

TABLES = {"user_mf_embedding.weight": ("user", 0), "item_mf_embedding.weight": ("item", 0),
          "user_mlp_embedding.weight": ("user", 0), "item_mlp_embedding.weight": ("item", 0)}
WIDTH_KEYS = ("mf_embedding_size", "mlp_embedding_size")


def widths(config, sparsity: float) -> dict:
    """Both towers' widths (its MLP's input layer shrinks with them)."""
    return {key: shrunk(config[key], sparsity) for key in WIDTH_KEYS}


def score_width(config) -> int:
    """RecBole scores NeuMF pair by pair: every pair's gathered embeddings and MLP activations."""
    mf, mlp = config["mf_embedding_size"], config["mlp_embedding_size"]
    return 3 * mf + 4 * mlp + sum(config["mlp_hidden_size"]) + 1


def costs(model, phase, batch_size) -> list[Term]:
    """Per (user, item) pair, training and inference alike: GMF u⊙i (d_mf, both
    MF tables), first MLP layer 2·d_mlp·h₁ (half reads the user MLP table, half
    the item MLP table, both read the layer's weight), the other MLP layers and
    the output layer (their own weights)."""
    terms: list[Term] = []
    if model.mf_train:
        terms.append((float(model.mf_embedding_size), ("user_mf_embedding.weight", "item_mf_embedding.weight")))
    if model.mlp_train:
        mlp = [(f"mlp_layers.{name}", m) for name, m in linears(model.mlp_layers)]
        first_name, first = mlp[0]
        half = first.in_features // 2 * first.out_features
        terms.append((float(half), ("user_mlp_embedding.weight", f"{first_name}.weight")))
        terms.append((float(half), ("item_mlp_embedding.weight", f"{first_name}.weight")))
        terms += [(float(m.in_features * m.out_features), (f"{name}.weight",)) for name, m in mlp[1:]]
    out = model.predict_layer
    terms.append((float(out.in_features * out.out_features), ("predict_layer.weight",)))
    return terms


def pair_logits(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return model.forward(users, items)  # predict() adds the sigmoid


def row_logits(model, users: torch.Tensor) -> torch.Tensor:
    """No full-sort scorer: (user, item) pairs, as RecBole's evaluation scores them."""
    items = torch.arange(model.n_items, device=users.device).expand(len(users), -1)
    flat_users = users.unsqueeze(1).expand_as(items).reshape(-1)
    return pair_logits(model, flat_users, items.reshape(-1)).view(items.shape)


BACKBONE = Backbone(
    "NeuMF", tables=lambda model: dict(TABLES), widths=widths, score_width=score_width, costs=costs,
    scores=Scores(rows=row_logits, pairs=pair_logits), compact=keeps_lookups,
)
