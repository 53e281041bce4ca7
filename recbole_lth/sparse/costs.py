"""Theoretical MACs of a sparse model relative to its dense self.

One accounting for every method (the "MACs (Tr.)/(In.)" columns of the DSL
paper, Table 2), counted on the backbone's own products:

* Every multiply-accumulate is attributed in equal shares to the *pruned*
  tensors whose entries it reads; a tensor at sparsity ``s`` keeps ``(1-s)``
  of the MACs attributed to it (its zero entries are skipped).  A MAC that
  reads no pruned tensor costs what it costs in the dense model: work on
  dense activations *derived* from sparse tables (LightGCN's propagated
  layers and final scores, NeuMF's hidden MLP layers) is not discounted.
* Training = forward + backward ≈ 3 × forward (the backward reads the same
  tensors for the activation gradient and for the weight gradient), so the
  training ratio is the forward ratio ``r`` of a training batch.  A method
  that needs the *dense* weight gradient on a fraction ``f`` of its steps
  (DSL's regrowth score) pays ``r + f·(1-r)/3``.
* Inference = RecBole's full-sort evaluation: every user scored against
  every item once.

What is counted per backbone is declared with it (``costs`` of
``recbole_lth/backbones/<model>.py``, each function's docstring says what it
counts).  A model without that declaration gets no MAC columns; the report
then shows ``1−s`` and labels it so ("MACs from").

Biases, activations, losses and regularisers are not counted.
"""
from __future__ import annotations

import logging

from torch import nn

from recbole_lth import backbones
from recbole_lth.backbones import base

logger = logging.getLogger("recbole_lth")

Term = base.Term


def forward_ratio(terms: list[Term], densities: dict[str, float]) -> float:
    """Sparse / dense MACs of ``terms``; ``densities`` = 1-s of each pruned tensor."""
    dense = sparse = 0.0
    for macs, names in terms:
        pruned = [densities[n] for n in names if n in densities]
        dense += macs
        sparse += macs * (sum(pruned) / len(pruned) if pruned else 1.0)
    return sparse / dense if dense else 1.0


def relative_macs(
    model: nn.Module,
    densities: dict[str, float],
    batch_size: int,
    dense_grad_fraction: float = 0.0,
    infer_densities: dict[str, float] | None = None,
) -> dict[str, float]:
    """``{"macs_train_rel", "macs_infer_rel"}`` of ``model`` whose pruned
    tensors have ``densities`` (``{param name: 1 - sparsity}``).

    ``densities`` are the (step-averaged) densities during training and
    ``infer_densities`` those of the reported model (default: the same).
    ``dense_grad_fraction``: share of training steps that compute the dense
    weight gradient (DSL's update steps).  Returns ``{}`` for a model this
    accounting does not describe.
    """
    declared = backbones.of(model)
    build = declared.costs if declared is not None else None
    if build is None:
        logger.warning("no MACs accounting for %s; the macs_* columns are left out", type(model).__name__)
        return {}
    train = forward_ratio(build(model, "train", batch_size), densities)
    train += dense_grad_fraction * (1.0 - train) / 3.0
    infer = forward_ratio(build(model, "infer", batch_size), infer_densities or densities)
    return {"macs_train_rel": round(train, 6), "macs_infer_rel": round(infer, 6)}
