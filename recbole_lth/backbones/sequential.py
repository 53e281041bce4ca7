"""Sequential recommenders: an item table read by a sequence encoder, scored
by the encoder's output against every item row (RecBole's ``full_sort_predict``).

SASRec and BERT4Rec tie every width to ``hidden_size`` (the item and position
tables, the transformer); GRU4Rec's item table is ``embedding_size`` wide and
its GRU has a ``hidden_size`` of its own.  ``small_dense`` shrinks the table
width, so for the transformers the whole encoder shrinks with it (a smaller
SASRec is the equal-budget model a user would train), rounded up to a
multiple of ``n_heads`` as RecBole's attention requires.
"""
from __future__ import annotations

import math

from recbole_lth.backbones.base import Backbone, Scores, generic_tables, keeps_lookups, shrunk
from recbole_lth.core import compact, rebind


def transformer_widths(config, sparsity: float) -> dict:
    heads = int(config["n_heads"])
    hidden = int(math.ceil(shrunk(config["hidden_size"], sparsity) / heads) * heads)
    inner = max(1, round(config["inner_size"] * hidden / config["hidden_size"]))
    return {"hidden_size": hidden, "inner_size": inner}


def embedding_widths(config, sparsity: float) -> dict:
    return {"embedding_size": shrunk(config["embedding_size"], sparsity)}


def _full_sort_predict(model, interaction):
    """The encoder's output against the compact item table, streamed: RecBole's
    own reads ``item_embedding.weight``, which a compact table does not hold."""
    item_seq = interaction[model.ITEM_SEQ]
    seq_output = model.forward(item_seq, interaction[model.ITEM_SEQ_LEN])
    return compact.stream_scores(seq_output, model.item_embedding.table)


def compact_scoring(model, final_embeddings: bool) -> None:
    keeps_lookups(model, final_embeddings)
    if isinstance(model.item_embedding, compact.CompactEmbedding):
        rebind.bind(model, "full_sort_predict", _full_sort_predict)


def next_item_logits(model, interaction):
    """Every item's logit after each history: what the CE loss softmaxes and full-sort ranks."""
    return model.full_sort_predict(interaction).view(len(interaction[model.ITEM_SEQ]), -1)


# Score KD: the teacher's softmax over the next item, the model's own likelihood.
NEXT_ITEM = Scores(pairs=None, batch=next_item_logits, multinomial=True)
SASREC = Backbone("SASRec", tables=generic_tables, widths=transformer_widths, compact=compact_scoring,
                  scores=NEXT_ITEM)
GRU4REC = Backbone("GRU4Rec", tables=generic_tables, widths=embedding_widths, compact=compact_scoring,
                   scores=NEXT_ITEM)
# BERT4Rec scores against item_embedding.weight[:n_items] plus an output bias; its compact scoring is not declared.
BERT4REC = Backbone("BERT4Rec", tables=generic_tables, widths=transformer_widths)
