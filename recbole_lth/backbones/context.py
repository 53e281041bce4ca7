"""Context-aware (CTR) recommenders built on RecBole's ``FMEmbedding``: one
token table over every field (a row per feature, fields at their offsets),
one table per token-sequence field, and the same again one wide for the
first-order (linear) part.  ``small_dense`` shrinks ``embedding_size`` (the
first-order tables stay one wide: they are the model's LR part); every
lookup is an ``nn.Embedding`` call, so a compact ticket scores through
RecBole's own forward."""
from __future__ import annotations

from recbole_lth.backbones.base import Backbone, Scores, generic_tables, keeps_lookups, shrunk


def embedding_widths(config, sparsity: float) -> dict:
    return {"embedding_size": shrunk(config["embedding_size"], sparsity)}


def row_logits(model, interaction):
    """A CTR model's logit per row (RecBole's ``forward``; ``predict`` is its sigmoid)."""
    return model.forward(interaction).view(-1)


# Score KD: the teacher's click probability per row, a Bernoulli KL (the model's BCE likelihood).
ROWS = Scores(pairs=None, batch=row_logits)


def declared(name: str) -> Backbone:
    return Backbone(name, tables=generic_tables, widths=embedding_widths, compact=keeps_lookups, scores=ROWS)


# PEP's three models and the CTR models the lightweight-embedding benchmarks use.
BACKBONES = [declared(name) for name in ("FM", "DeepFM", "AutoInt", "WideDeep", "DCN", "xDeepFM")]
