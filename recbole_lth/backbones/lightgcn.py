"""LightGCN: BPR's tables propagated over the normalised user-item graph."""
from __future__ import annotations

import warnings

import torch

from recbole_lth.backbones.base import Backbone, Lcm, Scores, Term, keeps_propagated
from recbole_lth.backbones.bpr import TABLES, embedding_widths
from recbole_lth.core import compact, rebind


def costs(model, phase, batch_size) -> list[Term]:
    """Training, per batch the full propagation (RecBole recomputes it every
    batch) L·nnz·d, of which layer 1 reads the item table (nnz/2·d, rows of
    users) and the user table (nnz/2·d, rows of items) and layers 2..L read
    dense activations, plus 2·B·d dense scores; inference one propagation plus
    U·I·d dense scores (nnz = 2 × training interactions).  Sparse E⁰ therefore
    saves little at inference; the paper's §3.3 discounts all of it by (1-s),
    we do not."""
    d, layers = model.latent_dim, model.n_layers
    nnz = float(model.norm_adj_matrix._nnz())
    terms: list[Term] = []
    if layers >= 1:
        terms += [(nnz / 2 * d, ("item_embedding.weight",)), (nnz / 2 * d, ("user_embedding.weight",))]
        terms.append(((layers - 1) * nnz * d, ()))
    scores = 2.0 * batch_size * d if phase == "train" else float(model.n_users * model.n_items * d)
    terms.append((scores, ()))
    return terms


class _Product(torch.autograd.Function):
    """``matrix @ x`` whose backward multiplies by the prebuilt transpose:
    torch would transpose (and re-sort) a sparse matrix every backward."""

    @staticmethod
    def forward(ctx, matrix, transpose, x):
        ctx.transpose = transpose
        return matrix @ x

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.transpose @ grad


class BipartiteGraph:
    """RecBole's normalised adjacency [0 R; Rᵀ 0] kept as its two halves, R
    (users × items) and Rᵀ, in CSR, built once: a layer is two half-size
    products with no concatenated table, and the backward of each is the
    other half's product."""

    def __init__(self, adjacency: torch.Tensor, n_users: int, n_items: int):
        adjacency = adjacency.coalesce()
        rows, cols = adjacency.indices()
        values = adjacency.values()
        user_rows = rows < n_users
        self.user_items = self.csr(rows[user_rows], cols[user_rows] - n_users, values[user_rows], (n_users, n_items))
        self.item_users = self.csr(rows[~user_rows] - n_users, cols[~user_rows], values[~user_rows],
                                   (n_items, n_users))

    def __deepcopy__(self, memo):
        # Constant data that torch cannot deep-copy (CSR has no storage): a
        # copied model shares it.
        return self

    @staticmethod
    def csr(rows, cols, values, shape) -> torch.Tensor:
        with warnings.catch_warnings():  # torch calls its sparse CSR support beta
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape).coalesce().to_sparse_csr()

    def layer(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (_Product.apply(self.user_items, self.item_users, items),
                _Product.apply(self.item_users, self.user_items, users))


def _bipartite_forward(model):
    """RecBole's LightGCN forward over :class:`BipartiteGraph`: the same
    propagation and layer mean (float rounding aside: the products' and the
    mean's summation order differ)."""
    users, items = model.user_embedding.weight, model.item_embedding.weight
    user_sum, item_sum = users, items
    for _ in range(model.n_layers):
        users, items = model.bipartite_graph.layer(users, items)
        user_sum, item_sum = user_sum + users, item_sum + items
    return user_sum / (model.n_layers + 1), item_sum / (model.n_layers + 1)


def accelerate(model) -> None:
    """Train and score through :func:`_bipartite_forward`: RecBole's step
    spends most of its time transposing and re-multiplying the whole
    concatenated adjacency (5-6x slower per step on ml-100k/ml-1m, CPU).
    The model's class, parameters and state dict stay RecBole's."""
    model.bipartite_graph = BipartiteGraph(model.norm_adj_matrix, model.n_users, model.n_items)
    rebind.bind(model, "forward", _bipartite_forward)


def _ego_rows(model, ids: torch.Tensor) -> torch.Tensor:
    is_user = (ids < model.n_users).unsqueeze(1)
    users = model.user_embedding.table.rows(ids.clamp(max=model.n_users - 1))
    items = model.item_embedding.table.rows((ids - model.n_users).clamp(min=0))
    return torch.where(is_user, users, items)


def _forward(model):
    """RecBole's LightGCN forward with the first propagation streamed over
    the adjacency's entries, so the layer-0 tables are never materialised
    whole; the layers' mean is taken per row block, the same reduction as
    RecBole's ``stack(...).mean(1)``."""
    adjacency = model.norm_adj_matrix
    target, source = adjacency.indices()
    weights = adjacency.values()
    total = model.n_users + model.n_items
    width = model.user_embedding.embedding_dim
    block = max(1, compact.CHUNK_ENTRIES // width)
    layers = []
    if model.n_layers:
        first = weights.new_zeros(total, width)
        for start in range(0, weights.numel(), block):
            part = slice(start, start + block)
            first.index_add_(0, target[part], weights[part].unsqueeze(1) * _ego_rows(model, source[part]))
        layers.append(first)
        for _ in range(model.n_layers - 1):
            layers.append(torch.sparse.mm(adjacency, layers[-1]))
    final = weights.new_empty(total, width)
    for start in range(0, total, block):
        stop = min(start + block, total)
        ego = _ego_rows(model, torch.arange(start, stop, device=weights.device))
        final[start:stop] = torch.stack([ego] + [layer[start:stop] for layer in layers], dim=1).mean(dim=1)
    return torch.split(final, [model.n_users, model.n_items])


def _compact_tables(model) -> bool:
    return all(isinstance(t, compact.CompactEmbedding) for t in (model.user_embedding, model.item_embedding))


def compact_scoring(model, final_embeddings: bool) -> None:
    """The stored (layer-0) tables stay compact and the first propagation
    streams them; the propagated embeddings it scores with are dense, as in RecBole.
    ``final_embeddings`` keeps only the propagated embeddings (not the graph either)."""
    model.norm_adj_matrix = model.norm_adj_matrix.coalesce()
    if _compact_tables(model):  # an exported lcm ticket's tables are small dense ones: its own forward
        rebind.bind(model, "forward", _forward)
    if final_embeddings:
        keeps_propagated(model)
        model.norm_adj_matrix = None


BACKBONE = Backbone(
    "LightGCN", tables=lambda model: dict(TABLES), widths=embedding_widths, costs=costs, scores=Scores(),
    compact=compact_scoring, lcm=Lcm(("user_embedding", "item_embedding"), "embedding_size"),
    accelerate=accelerate,
)
