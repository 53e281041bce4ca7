"""What a backbone declares: everything the plugin needs of one RecBole model.

A RecBole general recommender runs the mask methods and ``pep`` with no
declaration (its tables are found by :func:`generic_tables`, the mask core's
rule).  A :class:`Backbone` adds what cannot be read off the modules: the
width keys ``small_dense`` shrinks, the score width that sizes full-sort
batches, its MAC terms, its scores before the output activation (KD), how
a compact ticket scores, and whether ``lcm`` can project its tables.  A
field left ``None`` is a capability the backbone does not have; the plugin
refuses it (:func:`recbole_lth.backbones.require`) or, for MACs, reports
the ``1−s`` fallback and says so.

Nothing here imports RecBole at import time; of the plugin, only the mask core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recbole_lth.core import masking, rebind

# (dense MACs, names of the weight tensors those MACs read)
Term = tuple[float, tuple[str, ...]]
# {tensor name: ("user" | "item", entity axis)}
Tables = dict[str, tuple[str, int]]


def shrunk(width: int, sparsity: float) -> int:
    """⌈width·(1-s)⌉ (at least 1): the width whose tables hold (1-s) of the parameters."""
    return max(1, math.ceil(width * (1.0 - sparsity) - 1e-9))


def linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def linear_terms(model: nn.Module) -> list[Term]:
    """Every ``nn.Linear``: in·out MACs reading its own weight."""
    return [(float(m.in_features * m.out_features), (f"{name}.weight",)) for name, m in linears(model)]


def interaction(fields: dict):
    from recbole.data.interaction import Interaction

    return Interaction(fields)


def training_rows(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Rows of a table for a training loss.  A plain ``nn.Embedding`` is read
    with a sparse gradient: autograd adds its few rows into the table's dense
    gradient instead of zero-filling and adding one more table-sized tensor
    per lookup (the cost that made ranking KD 2x a BPR step).  Anything else
    (a projected or soft-thresholded table) is called as it is."""
    if type(module) is nn.Embedding and "forward" not in vars(module):
        return F.embedding(ids, module.weight, module.padding_idx, sparse=True)
    return module(ids)


class DeferredRows:
    """Rows of plain ``nn.Embedding`` tables read as leaf tensors whose
    gradients :meth:`flush` adds into each table's ``.grad`` in place, O(rows),
    after the backward: autograd would add them (sparse) to the model's own
    dense gradient out of place, a new table-sized tensor per table per step.
    Anything else is read as :func:`training_rows` reads it."""

    def __init__(self):
        self.pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]] = []

    def __call__(self, module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        if type(module) is not nn.Embedding or "forward" in vars(module):
            return training_rows(module, ids)
        rows = F.embedding(ids, module.weight.detach()).requires_grad_()
        self.pending.append((module.weight, ids, rows, module.sparse))
        return rows

    @torch.no_grad()
    def flush(self) -> None:
        for weight, ids, rows, sparse in self.pending:
            if rows.grad is None:
                continue
            if (weight.grad is not None and weight.grad.is_sparse) or (weight.grad is None and sparse):
                # learner: sparse_adam: the rows join the table's row-sparse gradient, uncoalesced
                flat = ids.reshape(1, -1)
                extra = torch.sparse_coo_tensor(flat, rows.grad.reshape(flat.shape[1], *weight.shape[1:]),
                                                weight.shape, check_invariants=False)  # ids < rows: looked up
                weight.grad = extra if weight.grad is None else weight.grad + extra
                continue
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            weight.grad.index_add_(0, ids.reshape(-1), rows.grad.reshape(-1, weight.shape[1]))
        self.pending.clear()


def dot_grid(user_table: str, item_table: str) -> Callable:
    """``Scores.grid`` of a dot-product scorer over two embedding modules;
    ``rows(module, ids)`` reads a table's rows (:func:`training_rows`, or a
    :class:`DeferredRows`)."""
    def grid(model, users, items, rows=training_rows):
        user_rows = rows(getattr(model, user_table), users)
        return (user_rows.unsqueeze(1) * rows(getattr(model, item_table), items)).sum(-1)

    return grid


def full_sort_logits(model, users: torch.Tensor) -> torch.Tensor:
    """RecBole's ``full_sort_predict`` as ``(B, n_items)`` (a dot-product scorer: no output activation)."""
    return model.full_sort_predict(interaction({model.USER_ID: users})).view(len(users), -1)


def predict_logits(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """RecBole's ``predict`` of flat (user, item) pairs (a dot-product scorer: no output activation)."""
    return model.predict(interaction({model.USER_ID: users, model.ITEM_ID: items}))


@dataclass(frozen=True)
class Scores:
    """A backbone's scores before its output activation, for distillation.

    ``rows(model, users)``: every item's score, ``(B, n_items)``;
    ``pairs(model, flat_users, flat_items)``: one score per pair, flat (None:
    gathered from ``rows``).
    ``multinomial``: its likelihood is a softmax over all items (else a
    sigmoid per pair); ``row_batches``: its training batches are whole user
    rows (the autoencoders), so score KD compares whole rows."""

    rows: Callable = full_sort_logits
    pairs: Callable | None = predict_logits
    # grid(model, users (B,), items (B, K), rows=training_rows) -> (B, K): the
    # pairs' scores for a training loss with one lookup per user and gradients
    # of O(B·K) rows (None: ``pairs`` of the flattened grid).
    grid: Callable | None = None
    multinomial: bool = False
    row_batches: bool = False
    # batch(model, interaction) -> logits of a training batch as the model's
    # task reads it, for score KD where a batch is not (user, item) pairs: a
    # sequential model's every item after each history (B, n_items), a CTR
    # model's one logit per row (B,).  Set: only kd_type score applies.
    batch: Callable | None = None


@dataclass(frozen=True)
class Lcm:
    """``lcm`` projects these ``nn.Embedding`` tables (read through ``.weight``
    or looked up) to the width set by ``width_key``."""

    tables: tuple[str, ...]
    width_key: str


@dataclass(frozen=True)
class Backbone:
    name: str  # RecBole's class name (``--model``)
    # The prunable tables of prune_params=embeddings and their user/item axis.
    tables: Callable[[nn.Module], Tables]
    # small_dense: the config values that shrink every prunable table to (1-s) of its size.
    widths: Callable[[object, float], dict] | None = None
    # Floats held per (user, item) score while full-sort evaluation scores a batch.
    score_width: Callable[[object], int] = lambda config: 1
    # costs(model, phase, batch_size) -> [Term]: its multiply-accumulates (recbole_lth.sparse.costs).
    costs: Callable[[nn.Module, str, int], list[Term]] | None = None
    scores: Scores | None = None  # distillation
    # compact(model, final_embeddings): make a model whose tables were replaced
    # by compact modules score through them (None: it cannot; identity: RecBole's
    # own forward only looks rows up).
    compact: Callable[[nn.Module, bool], None] | None = None
    lcm: Lcm | None = None
    # accelerate(model): give a freshly built model a faster forward that
    # computes the same thing (key fast_propagation); its class, parameters
    # and state dict stay RecBole's.
    accelerate: Callable[[nn.Module], None] | None = None


def generic_tables(model: nn.Module) -> Tables:
    """Every ``nn.Embedding`` weight and every ``nn.Linear`` weight with an
    item-sized side, in model order, with the entity each indexes (sizes
    decide, the name breaking ties; ``None`` entries are tables of neither)."""
    names = list(masking.select_prunable(model, "embeddings"))
    return masking.table_axes(model, names)


def _propagated(model):
    return model.final_user_embeddings, model.final_item_embeddings


def keeps_propagated(model: nn.Module) -> None:
    """``final_embeddings`` of a graph backbone (LightGCN, NGCF): propagate once
    and keep the final user and item embeddings, dense, instead of the layer-0
    tables; its forward returns them."""
    with torch.no_grad():
        users, items = model.forward()
    model.final_user_embeddings, model.final_item_embeddings = users, items
    model.user_embedding = model.item_embedding = None
    rebind.bind(model, "forward", _propagated)


def keeps_lookups(model: nn.Module, final_embeddings: bool) -> None:
    """Compact scoring of a model whose forward only looks rows up (or calls
    its ``nn.Linear`` layers): nothing to change."""
    if final_embeddings:
        raise ValueError("final_embeddings: only a graph backbone (LightGCN, NGCF) propagates embeddings; "
                         f"not allowed for {type(model).__name__}")
