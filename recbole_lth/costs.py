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

What is counted per backbone (d = embedding size, U/I = users/items,
B = training batch, L = layers, nnz = entries of LightGCN's normalised
adjacency = 2 × training interactions):

* BPR: training, per triple 2 dot products u·i (2d MACs, read the user and
  the item table); inference U·I·d, same tables.
* LightGCN: training, per batch the full propagation (RecBole recomputes it
  every batch) L·nnz·d, of which layer 1 reads the item table (nnz/2·d, rows
  of users) and the user table (nnz/2·d, rows of items) and layers 2..L read
  dense activations, plus 2·B·d dense scores; inference one propagation plus
  U·I·d dense scores.  Sparse E⁰ therefore saves little at inference; the
  paper's §3.3 discounts all of it by (1-s), we do not.
* NeuMF: per (user, item) pair, training and inference alike: GMF u⊙i
  (d_mf, both MF tables), first MLP layer 2·d_mlp·h₁ (half reads the user MLP
  table, half the item MLP table, both read the layer's weight), the other
  MLP layers and the output layer (their own weights).
* MultiVAE: per user, training and inference alike: every ``nn.Linear``
  in·out (its own weight), so the item-sized first and last layers dominate.
* CDAE: per user, training and inference alike: ``h_item`` I·d and
  ``out_layer`` d·I (their weights) plus adding the user's row (d, reads
  ``h_user``).

Biases, activations, losses and regularisers are not counted.
"""
from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger("recbole_lth")

# (dense MACs, names of the weight tensors those MACs read)
Term = tuple[float, tuple[str, ...]]


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _linear_terms(model: nn.Module) -> list[Term]:
    return [(float(m.in_features * m.out_features), (f"{name}.weight",)) for name, m in _linears(model)]


def _bpr(model, phase, batch_size) -> list[Term]:
    d = model.user_embedding.embedding_dim
    tables = ("user_embedding.weight", "item_embedding.weight")
    per_unit = 2.0 * d if phase == "train" else float(model.n_users * model.n_items * d)
    return [(per_unit, tables)]


def _lightgcn(model, phase, batch_size) -> list[Term]:
    d, layers = model.latent_dim, model.n_layers
    nnz = float(model.norm_adj_matrix._nnz())
    terms: list[Term] = []
    if layers >= 1:
        terms += [(nnz / 2 * d, ("item_embedding.weight",)), (nnz / 2 * d, ("user_embedding.weight",))]
        terms.append(((layers - 1) * nnz * d, ()))
    scores = 2.0 * batch_size * d if phase == "train" else float(model.n_users * model.n_items * d)
    terms.append((scores, ()))
    return terms


def _neumf(model, phase, batch_size) -> list[Term]:
    terms: list[Term] = []
    if model.mf_train:
        terms.append((float(model.mf_embedding_size), ("user_mf_embedding.weight", "item_mf_embedding.weight")))
    if model.mlp_train:
        mlp = [(f"mlp_layers.{name}", m) for name, m in _linears(model.mlp_layers)]
        first_name, first = mlp[0]
        half = first.in_features // 2 * first.out_features
        terms.append((float(half), ("user_mlp_embedding.weight", f"{first_name}.weight")))
        terms.append((float(half), ("item_mlp_embedding.weight", f"{first_name}.weight")))
        terms += [(float(m.in_features * m.out_features), (f"{name}.weight",)) for name, m in mlp[1:]]
    out = model.predict_layer
    terms.append((float(out.in_features * out.out_features), ("predict_layer.weight",)))
    return terms


def _multivae(model, phase, batch_size) -> list[Term]:
    return _linear_terms(model)


def _cdae(model, phase, batch_size) -> list[Term]:
    return _linear_terms(model) + [(float(model.h_user.embedding_dim), ("h_user.weight",))]


BACKBONES = {"BPR": _bpr, "LightGCN": _lightgcn, "NeuMF": _neumf, "MultiVAE": _multivae, "CDAE": _cdae}


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
    build = BACKBONES.get(type(model).__name__)
    if build is None:
        logger.warning("no MACs accounting for %s; the macs_* columns are left out", type(model).__name__)
        return {}
    train = forward_ratio(build(model, "train", batch_size), densities)
    train += dense_grad_fraction * (1.0 - train) / 3.0
    infer = forward_ratio(build(model, "infer", batch_size), infer_densities or densities)
    return {"macs_train_rel": round(train, 6), "macs_infer_rel": round(infer, 6)}
