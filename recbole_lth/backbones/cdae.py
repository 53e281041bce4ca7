"""CDAE: a denoising autoencoder over each user's item row, plus a user table."""
from __future__ import annotations

import torch

from recbole_lth.backbones.base import Backbone, Scores, Term, keeps_lookups, linear_terms
from recbole_lth.backbones.bpr import embedding_widths

TABLES = {"h_user.weight": ("user", 0), "h_item.weight": ("item", 1), "out_layer.weight": ("item", 0)}


def costs(model, phase, batch_size) -> list[Term]:
    """Per user, training and inference alike: ``h_item`` I·d and ``out_layer``
    d·I (their weights) plus adding the user's row (d, reads ``h_user``)."""
    return linear_terms(model) + [(float(model.h_user.embedding_dim), ("h_user.weight",))]


def row_logits(model, users: torch.Tensor) -> torch.Tensor:
    return model.forward(model.get_rating_matrix(users), users)  # full_sort_predict adds the sigmoid



# small_dense: embedding_size is one side of h_user, h_item and the output layer alike.
BACKBONE = Backbone(
    "CDAE", tables=lambda model: dict(TABLES), widths=embedding_widths, score_width=lambda config: 3,
    costs=costs, scores=Scores(rows=row_logits, pairs=None, row_batches=True), compact=keeps_lookups,
)
