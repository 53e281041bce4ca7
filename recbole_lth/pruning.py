"""Pruning strategies: pure functions from (weights, current masks) to new masks.

Nothing here touches a model or an optimizer (OpenLTH's split): the lottery
loop decides *when* to prune, these functions decide *which* weights.  Every
function works with exact counts (``topk`` on the tensors' own device), so a
ticket at sparsity ``s`` keeps exactly ``round((1 - s) * N)`` weights, per
table or over all selected tables together.

``scope``:
* ``"global"``: all selected tensors are ranked together (LTH-MRS prunes the
  joint user+item table this way); each table's sparsity follows from it.
* ``"per_table"``: each tensor keeps its own count.
"""
from __future__ import annotations

import math

import torch

from recbole_lth.masking import PRUNE_SCOPES

Masks = dict[str, torch.Tensor]
Tensors = dict[str, torch.Tensor]


def kept_count(numel: int, sparsity: float) -> int:
    """Number of active weights a tensor of ``numel`` keeps at ``sparsity``."""
    return int(round((1.0 - sparsity) * numel))


def imp_sparsity(prune_rate: float, round_idx: int) -> float:
    """Sparsity after ``round_idx`` IMP rounds pruning ``prune_rate`` of survivors."""
    return 1.0 - (1.0 - prune_rate) ** round_idx


def imp_rounds_to(prune_rate: float, target_sparsity: float) -> int:
    """Fewest IMP rounds whose sparsity reaches ``target_sparsity``."""
    if target_sparsity <= 0:
        return 0
    rounds = math.log(1.0 - target_sparsity) / math.log(1.0 - prune_rate)
    return max(0, math.ceil(rounds - 1e-9))


def _keep_top(scores: Tensors, eligible: Masks, keep: dict[str, int] | int, scope: str) -> Masks:
    """Keep the ``keep`` highest-scoring eligible entries (global or per table)."""
    if scope not in PRUNE_SCOPES:
        raise ValueError(f"scope must be one of {PRUNE_SCOPES}, got {scope!r}")
    neg_inf = float("-inf")
    if scope == "per_table":
        new = {}
        for name, score in scores.items():
            ranked = score.masked_fill(~eligible[name], neg_inf).flatten()
            mask = torch.zeros_like(ranked, dtype=torch.bool)
            k = keep[name]
            if k > 0:
                mask[torch.topk(ranked, k, sorted=False).indices] = True
            new[name] = mask.view_as(score)
        return new
    names = list(scores)
    flat = torch.cat([scores[n].masked_fill(~eligible[n], neg_inf).flatten() for n in names])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(flat, int(keep), sorted=False).indices] = True
    new, offset = {}, 0
    for n in names:
        size = scores[n].numel()
        new[n] = mask[offset : offset + size].view_as(scores[n])
        offset += size
    return new


def _counts(masks: Masks, sparsity: float, scope: str):
    if scope == "per_table":
        return {n: kept_count(m.numel(), sparsity) for n, m in masks.items()}
    return kept_count(sum(m.numel() for m in masks.values()), sparsity)


def magnitude_prune(weights: Tensors, masks: Masks, sparsity: float, scope: str = "global") -> Masks:
    """Keep the largest-|w| surviving weights so that the selected tensors
    reach ``sparsity`` (a fraction of *all* their entries, not of survivors).

    Used by IMP (sparsity of round r = 1-(1-p)^r, computed from the original
    size so rounding never accumulates) and OMP (one shot from the full mask).
    Weights already pruned are never revived.
    """
    scores = {n: w.detach().abs().float() for n, w in weights.items()}
    return _keep_top(scores, masks, _counts(masks, sparsity, scope), scope)


def random_mask(shapes: Tensors, sparsity: float, scope: str = "global", seed: int = 0) -> Masks:
    """A uniformly random mask with exactly ``(1-s)·N`` active weights.

    Scores come from a CPU generator so the mask is identical on CPU and GPU
    for the same seed; the mask is returned on each tensor's device.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    scores = {n: torch.rand(t.shape, generator=generator) for n, t in shapes.items()}
    eligible = {n: torch.ones(t.shape, dtype=torch.bool) for n, t in shapes.items()}
    masks = _keep_top(scores, eligible, _counts(eligible, sparsity, scope), scope)
    return {n: m.to(shapes[n].device) for n, m in masks.items()}
