"""BPR: a user and an item table, scored by their dot product."""
from __future__ import annotations


from recbole_lth.backbones.base import Backbone, Lcm, Scores, Term, dot_grid, keeps_lookups, shrunk
from recbole_lth.core import compact, rebind

TABLES = {"user_embedding.weight": ("user", 0), "item_embedding.weight": ("item", 0)}


def embedding_widths(config, sparsity: float) -> dict:
    return {"embedding_size": shrunk(config["embedding_size"], sparsity)}


def costs(model, phase, batch_size) -> list[Term]:
    """Training, per triple 2 dot products u·i (2d MACs, read the user and the
    item table); inference U·I·d, same tables."""
    d = model.user_embedding.embedding_dim
    tables = ("user_embedding.weight", "item_embedding.weight")
    per_unit = 2.0 * d if phase == "train" else float(model.n_users * model.n_items * d)
    return [(per_unit, tables)]


def _full_sort_predict(model, interaction):
    users = model.user_embedding(interaction[model.USER_ID])
    return compact.stream_scores(users, model.item_embedding.table).view(-1)


def compact_scoring(model, final_embeddings: bool) -> None:
    """Full-sort scoring streams the compact item table in chunks."""
    keeps_lookups(model, final_embeddings)
    if isinstance(model.item_embedding, compact.CompactEmbedding):
        rebind.bind(model, "full_sort_predict", _full_sort_predict)


BACKBONE = Backbone(
    "BPR", tables=lambda model: dict(TABLES), widths=embedding_widths, costs=costs,
    scores=Scores(grid=dot_grid("user_embedding", "item_embedding")),
    compact=compact_scoring, lcm=Lcm(("user_embedding", "item_embedding"), "embedding_size"),
)
