"""Context-aware (CTR) recommenders built on RecBole's ``FMEmbedding``: one
token table over every field (a row per feature, fields at their offsets),
one table per token-sequence field, and the same again one wide for the
first-order (linear) part.  ``small_dense`` shrinks ``embedding_size`` (the
first-order tables stay one wide: they are the model's LR part); every
lookup is an ``nn.Embedding`` call, so a compact ticket scores through
RecBole's own forward."""
from __future__ import annotations

from recbole_lth.backbones.base import Backbone, generic_tables, keeps_lookups, shrunk


def embedding_widths(config, sparsity: float) -> dict:
    return {"embedding_size": shrunk(config["embedding_size"], sparsity)}


def declared(name: str) -> Backbone:
    return Backbone(name, tables=generic_tables, widths=embedding_widths, compact=keeps_lookups)


# PEP's three models and the CTR models the lightweight-embedding benchmarks use.
BACKBONES = [declared(name) for name in ("FM", "DeepFM", "AutoInt", "WideDeep", "DCN", "xDeepFM")]
