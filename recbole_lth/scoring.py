"""How each RecBole backbone scores users and items, in one place.

``row_logits`` (every item for some users), ``pair_logits`` (given items),
``log_likes`` (each model's own likelihood) serve distillation and anything
else that needs a model's scores before its output activation (what
full-sort evaluation ranks).
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
import torch.nn.functional as F


def _recbole_classes():
    from recbole.model.abstract_recommender import AbstractRecommender, AutoEncoderMixin
    from recbole.model.general_recommender import CDAE, MultiVAE, NeuMF

    return AbstractRecommender, AutoEncoderMixin, CDAE, MultiVAE, NeuMF


def _interaction(fields: dict):
    from recbole.data.interaction import Interaction

    return Interaction(fields)


def is_autoencoder(model) -> bool:
    """Models whose training batches are whole user rows (MultiVAE, CDAE)."""
    return isinstance(model, _recbole_classes()[1])


def is_multinomial(model) -> bool:
    """MultiVAE's likelihood is a softmax over all items; the others score
    each (user, item) pair with a sigmoid (BPR/LightGCN as in RD, NeuMF/CDAE BCE)."""
    return isinstance(model, _recbole_classes()[3])


def is_graph_model(model) -> bool:
    """``forward()`` without inputs propagates the whole graph (LightGCN)."""
    return not inspect.signature(model.forward).parameters


def row_logits(model, users: torch.Tensor) -> torch.Tensor:
    """Every item's score for each user, ``(B, n_items)``, before any output
    activation (what full-sort evaluation ranks)."""
    AbstractRecommender, _, CDAE, MultiVAE, _ = _recbole_classes()
    if isinstance(model, MultiVAE):
        return model.forward(model.get_rating_matrix(users))[0]
    if isinstance(model, CDAE):  # full_sort_predict would add the output sigmoid
        return model.forward(model.get_rating_matrix(users), users)
    if type(model).full_sort_predict is AbstractRecommender.full_sort_predict:
        # NeuMF: no full-sort scorer; score (user, item) pairs as RecBole's evaluation does.
        items = torch.arange(model.n_items, device=users.device).expand(len(users), -1)
        return pair_logits(model, users, items)
    return model.full_sort_predict(_interaction({model.USER_ID: users})).view(len(users), -1)


def pair_logits(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores of ``items`` (``(B, K)``) for ``users`` (``(B,)``), ``(B, K)``."""
    if is_autoencoder(model):
        # The autoencoders score whole rows anyway; the batch is those rows.
        return row_logits(model, users).gather(1, items)
    flat_users = users.unsqueeze(1).expand_as(items).reshape(-1)
    flat_items = items.reshape(-1)
    if isinstance(model, _recbole_classes()[4]):  # NeuMF: predict() adds a sigmoid; forward() is the logit
        scores = model.forward(flat_users, flat_items)
    else:
        scores = model.predict(_interaction({model.USER_ID: flat_users, model.ITEM_ID: flat_items}))
    return scores.view(items.shape)


def log_likes(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """log P(user likes item) under the model's own likelihood, ``(B, K)``."""
    if is_multinomial(model):
        return F.log_softmax(row_logits(model, users), dim=1).gather(1, items)
    return F.logsigmoid(pair_logits(model, users, items))


@contextmanager
def propagate_once(model):
    """Graph models propagate the whole graph per ``forward()`` call.  Within
    one loss evaluation the weights do not change, so the parts of a loss
    share one propagation (and one autograd graph)."""
    if not is_graph_model(model):
        yield
        return
    original = model.forward
    cached = []

    def forward_once():
        if not cached:
            cached.append(original())
        return cached[0]

    model.forward = forward_once
    try:
        yield
    finally:
        del model.forward
