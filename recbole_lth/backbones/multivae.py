"""MultiVAE: a variational autoencoder over each user's item row."""
from __future__ import annotations

import torch

from recbole_lth.backbones.base import Backbone, Scores, Term, keeps_lookups, linear_terms, linears, shrunk


def tables(model) -> dict:
    """The item-sized layers: the encoder's input (one column per item) and the decoder's output (one row per item)."""
    first = linears(model.encoder)[0][0]
    last = linears(model.decoder)[-1][0]
    return {f"encoder.{first}.weight": ("item", 1), f"decoder.{last}.weight": ("item", 0)}


def widths(config, sparsity: float) -> dict:
    """The first ``mlp_hidden_size`` entry, the one side of both item-sized layers."""
    hidden = list(config["mlp_hidden_size"])
    hidden[0] = shrunk(hidden[0], sparsity)
    return {"mlp_hidden_size": hidden}


def costs(model, phase, batch_size) -> list[Term]:
    """Per user, training and inference alike: every ``nn.Linear`` in·out (its
    own weight), so the item-sized first and last layers dominate."""
    return linear_terms(model)


def row_logits(model, users: torch.Tensor) -> torch.Tensor:
    return model.forward(model.get_rating_matrix(users))[0]



BACKBONE = Backbone(
    "MultiVAE", tables=tables, widths=widths, score_width=lambda config: 3, costs=costs,
    scores=Scores(rows=row_logits, pairs=None, multinomial=True, row_batches=True), compact=keeps_lookups,
)
