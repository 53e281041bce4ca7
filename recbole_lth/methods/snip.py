"""SNIP (Lee et al., ICLR 2019): one-shot pruning at initialisation by connection sensitivity.

The loss gradient of the initial model is accumulated over ``snip_batches``
training batches (RecBole's own loss and data order); each weight is scored
``|g ⊙ w|`` and, per target, the top scores are kept; the masked initial
weights are then trained.  No dense training is needed.  Lee et al. score one
batch; an embedding row only gets a gradient from the batches that look it
up, so a few batches score more rows (rows never looked up score 0 and are
pruned first).
"""
from __future__ import annotations

import torch

from recbole_lth.core.optim import dense_grad
from recbole_lth.core import pruning
from recbole_lth.core.settings import number_key
from recbole_lth.engine import distributed
from recbole_lth.engine.trainer import invalidate_caches
from recbole_lth.methods.base import Method, each_target

KEYS = (number_key("snip_batches", "training batches whose loss gradient scores the initial weights", 1,
                   whole=True),)


def init_gradients(run, batches: int) -> dict:
    """The loss gradient at the initial weights, summed over ``batches`` batches."""
    model = run.model
    run.restart(run.init_state())
    model.train()
    model.zero_grad(set_to_none=True)
    for i, interaction in enumerate(run.train_data):
        if i >= batches:
            break
        loss = model.calculate_loss(interaction.to(run.device))
        (sum(loss) if isinstance(loss, tuple) else loss).backward()
    grads = {n: dense_grad(p.grad.detach()).clone() if p.grad is not None else torch.zeros_like(p)
             for n, p in run.prunable.items()}
    model.zero_grad(set_to_none=True)
    invalidate_caches(model)
    return distributed.average(grads)  # each rank of a --nproc run scored its own shard of the batches


def plan(run) -> None:
    grads = init_gradients(run, run.settings["snip_batches"])
    scores = pruning.saliency_scores({n: p.detach() for n, p in run.prunable.items()}, grads)
    each_target(run, lambda index, sparsity, key: (
        run, dict(masks=pruning.keep_top(scores, run.full_masks(), sparsity, run.scope), start_state=run.init_state())))


METHOD = Method(
    "snip", "per target prune the initial weights in one shot by |grad ⊙ w| over snip_batches batches (SNIP, "
    "Lee et al. 2019), then train; no dense training", plan, keys=KEYS,
)
