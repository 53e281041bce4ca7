"""How a backbone scores users and items, from its declaration.

``row_logits`` (every item for some users), ``pair_logits`` (given items),
``log_likes`` (each model's own likelihood) serve distillation and anything
else that needs a model's scores before its output activation (what
full-sort evaluation ranks).  What each backbone's scores are is declared in
``recbole_lth/backbones/<model>.py`` (:class:`~recbole_lth.backbones.base.Scores`);
an undeclared model has none (distillation is refused for it).
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from recbole_lth import backbones
from recbole_lth.core import rebind


def scores_of(model):
    return backbones.require(type(model).__name__, "scores", "distillation")


def is_autoencoder(model) -> bool:
    """Models whose training batches are whole user rows (MultiVAE, CDAE)."""
    return scores_of(model).row_batches


def is_multinomial(model) -> bool:
    """MultiVAE's likelihood is a softmax over all items; the others score
    each (user, item) pair with a sigmoid (BPR/LightGCN as in RD, NeuMF/CDAE BCE)."""
    return scores_of(model).multinomial


def batch_logits(model):
    """The backbone's scorer of a whole training batch (sequential, CTR), or None."""
    return scores_of(model).batch


def is_graph_model(model) -> bool:
    """``forward()`` without inputs propagates the whole graph (LightGCN, NGCF)."""
    return not inspect.signature(model.forward).parameters


def row_logits(model, users: torch.Tensor) -> torch.Tensor:
    """Every item's score for each user, ``(B, n_items)``, before any output
    activation (what full-sort evaluation ranks)."""
    return scores_of(model).rows(model, users)


def pair_logits(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores of ``items`` (``(B, K)``) for ``users`` (``(B,)``), ``(B, K)``."""
    scores = scores_of(model)
    if scores.pairs is None:
        # The autoencoders score whole rows anyway; the batch is those rows.
        return scores.rows(model, users).gather(1, items)
    flat_users = users.unsqueeze(1).expand_as(items).reshape(-1)
    return scores.pairs(model, flat_users, items.reshape(-1)).view(items.shape)


def log_likes(model, users: torch.Tensor, items: torch.Tensor, rows=None) -> torch.Tensor:
    """log P(user likes item) under the model's own likelihood, ``(B, K)``;
    ``rows``: how a backbone with ``Scores.grid`` reads its tables' rows
    (default: sparse-gradient lookups)."""
    if is_multinomial(model):
        return F.log_softmax(row_logits(model, users), dim=1).gather(1, items)
    grid = scores_of(model).grid
    if grid is None:
        return F.logsigmoid(pair_logits(model, users, items))
    return F.logsigmoid(grid(model, users, items) if rows is None else grid(model, users, items, rows))


@contextmanager
def propagate_once(model):
    """Graph models propagate the whole graph per ``forward()`` call.  Within
    one loss evaluation the weights do not change, so the parts of a loss
    share one propagation (and one autograd graph)."""
    if not is_graph_model(model):
        yield
        return
    original = model.forward  # an instance's own forward (fast_propagation's) is put back, not deleted
    cached = []

    def forward_once():
        if not cached:
            cached.append(original())
        return cached[0]

    with rebind.swapped(model, "forward", forward_once):
        yield
