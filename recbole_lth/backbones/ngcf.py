"""NGCF (Wang et al., SIGIR 2019; RecBole's): BPR's tables propagated through
bi-interaction GNN layers, the layers' outputs concatenated and scored by a
dot product."""
from __future__ import annotations


import torch

from recbole_lth.backbones.base import Backbone, Lcm, Scores, Term, keeps_propagated
from recbole_lth.backbones.bpr import TABLES, embedding_widths
from recbole_lth.core import compact, rebind


def costs(model, phase, batch_size) -> list[Term]:
    """Per propagation (every training batch, once at inference), layer l with
    widths d_in → d_out over N = U+I nodes: L·E (nnz·d_in), the interaction
    (L·E)⊙E (N·d_in) and the two ``nn.Linear``s (2·N·d_in·d_out, their own
    weights).  Layer 1's L·E and ⊙E read the tables (half each for L·E, by
    rows for ⊙E); later layers read dense activations.  Scores: the
    concatenated width D = d + Σ hidden, 2·B·D per training batch, U·I·D at
    inference."""
    nnz = float(model.norm_adj_matrix._nnz())
    users, items = float(model.n_users), float(model.n_items)
    tables = ("user_embedding.weight", "item_embedding.weight")
    terms: list[Term] = []
    for index, layer in enumerate(model.GNNlayers):
        d_in, d_out = layer.in_dim, layer.out_dim
        if index == 0:
            terms += [(nnz / 2 * d_in, (tables[1],)), (nnz / 2 * d_in, (tables[0],)),
                      (users * d_in, (tables[0],)), (items * d_in, (tables[1],))]
        else:
            terms.append((nnz * d_in + (users + items) * d_in, ()))
        for name in ("linear", "interActTransform"):
            terms.append(((users + items) * d_in * d_out, (f"GNNlayers.{index}.{name}.weight",)))
    width = float(sum(model.hidden_size_list))
    scores = 2.0 * batch_size * width if phase == "train" else users * items * width
    terms.append((scores, ()))
    return terms


def _ego_embeddings(model):
    """The layer-0 tables as one matrix, materialised from the compact tables
    for each propagation (NGCF's layers read the whole table)."""
    return torch.cat([model.user_embedding.table.dense(), model.item_embedding.table.dense()], dim=0)


def compact_scoring(model, final_embeddings: bool) -> None:
    """NGCF reads its tables whole (``get_ego_embeddings``): each propagation
    materialises them from the compact tables (a transient dense copy), once
    per evaluation since RecBole caches the propagated embeddings;
    ``final_embeddings`` keeps only the propagated embeddings."""
    if all(isinstance(t, compact.CompactEmbedding) for t in (model.user_embedding, model.item_embedding)):
        rebind.bind(model, "get_ego_embeddings", _ego_embeddings)  # not an lcm ticket's dense tables
    if final_embeddings:
        keeps_propagated(model)


BACKBONE = Backbone(
    "NGCF", tables=lambda model: dict(TABLES), widths=embedding_widths, costs=costs, scores=Scores(),
    compact=compact_scoring, lcm=Lcm(("user_embedding", "item_embedding"), "embedding_size"),
)
