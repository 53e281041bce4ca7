"""Pruning: score functions, and the selection of the top-scoring weights.

Nothing here touches a model or an optimizer (OpenLTH's split): a method
decides *when* to prune, a score function says *how important* each weight
is (torch.nn.utils.prune's ``importance_scores``, kept apart from the
weights), and :func:`keep_top` decides *which* weights stay.  Selection uses
exact counts (``topk`` on the tensors' own device, no sort, no host sync), so
a ticket at sparsity ``s`` keeps exactly ``round((1 - s) * N)`` weights, per
table or over all selected tables together.

``scope``:
* ``"global"``: all selected tensors are ranked together (LTH-MRS prunes the
  joint user+item table this way); each table's sparsity follows from it.
* ``"per_table"``: each tensor keeps its own count.
* ``"per_field"`` (a :class:`FieldScope`): each field of a CTR model's token
  table keeps its own count, as if each field's rows were a table of their
  own (PEP's per-field budget); a table without fields keeps its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recbole_lth.core.masking import PRUNE_SCOPES

Masks = dict[str, torch.Tensor]
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FieldScope:
    """``per_field``: the row ranges ``(field, first row, rows)`` of each
    field-structured tensor; a tensor not listed is one group."""

    fields: dict

    def __str__(self) -> str:
        return "per_field"

    def split(self, tensors: Tensors) -> Tensors:
        """Each listed tensor as one view per field, ``name[field]``; the others as they are."""
        out = {}
        for name, tensor in tensors.items():
            for field, start, rows in self.fields.get(name, ()):
                out[f"{name}[{field}]"] = tensor[start:start + rows]
            if name not in self.fields:
                out[name] = tensor
        return out

    def join(self, parts: Masks, like: Tensors) -> Masks:
        """:meth:`split`'s inverse for masks (rows no field covers stay False)."""
        out = {}
        for name, tensor in like.items():
            if name not in self.fields:
                out[name] = parts[name]
                continue
            mask = torch.zeros(tensor.shape, dtype=torch.bool, device=tensor.device)
            for field, start, rows in self.fields[name]:
                mask[start:start + rows] = parts[f"{name}[{field}]"]
            out[name] = mask
        return out


# ------------------------------------------------------------------ counts
def kept_count(numel: int, sparsity: float) -> int:
    """Number of active weights a tensor of ``numel`` keeps at ``sparsity``."""
    return int(round((1.0 - sparsity) * numel))


def kept_counts(numels: dict[str, int], sparsity: float, scope) -> dict[str, int] | int:
    """What :func:`keep_top_k` keeps at ``sparsity``: one count per tensor
    (``per_table``; ``per_field``: per field group) or one over all of them (``global``)."""
    if scope in ("per_table", "per_field") or isinstance(scope, FieldScope):
        return {n: kept_count(size, sparsity) for n, size in numels.items()}
    return kept_count(sum(numels.values()), sparsity)


def imp_sparsity(prune_rate: float, round_idx: int) -> float:
    """Sparsity after ``round_idx`` IMP rounds pruning ``prune_rate`` of survivors."""
    return 1.0 - (1.0 - prune_rate) ** round_idx


def imp_rounds_to(prune_rate: float, target_sparsity: float) -> int:
    """Fewest IMP rounds whose sparsity reaches ``target_sparsity``."""
    if target_sparsity <= 0:
        return 0
    rounds = math.log(1.0 - target_sparsity) / math.log(1.0 - prune_rate)
    return max(0, math.ceil(rounds - 1e-9))


# --------------------------------------------------------------- selection
def keep_top_k(scores: Tensors, eligible: Masks, keep: dict[str, int] | int, scope: str) -> Masks:
    """Masks keeping the ``keep`` highest-scoring ``eligible`` entries
    (one count over all tensors, or one per tensor with ``per_table``)."""
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


def keep_top(scores: Tensors, eligible: Masks, sparsity: float, scope="global") -> Masks:
    """Masks keeping the highest-scoring ``eligible`` entries so that the
    tensors reach ``sparsity`` (a fraction of *all* their entries, not of the
    eligible ones); entries not eligible are never kept."""
    if isinstance(scope, FieldScope):  # each field's rows: a table of their own
        kept = keep_top(scope.split(scores), scope.split(eligible), sparsity, "per_table")
        return scope.join(kept, scores)
    numels = {n: s.numel() for n, s in scores.items()}
    return keep_top_k(scores, eligible, kept_counts(numels, sparsity, scope), scope)


# ------------------------------------------------------------------ scores
def magnitude_scores(weights: Tensors) -> Tensors:
    return {n: w.detach().abs().float() for n, w in weights.items()}


def random_scores(shapes: Tensors, seed: int) -> Tensors:
    """Uniform scores from a CPU generator, so that the same seed gives the
    same mask on CPU and GPU."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return {n: torch.rand(t.shape, generator=generator) for n, t in shapes.items()}


def saliency_scores(weights: Tensors, grads: Tensors) -> Tensors:
    """``|g ⊙ w|``: SNIP's connection sensitivity (Lee et al., ICLR 2019)."""
    return {n: (grads[n] * w.detach()).abs().float() for n, w in weights.items()}


# ------------------------------------------------------------- strategies
def magnitude_prune(weights: Tensors, masks: Masks, sparsity: float, scope: str = "global") -> Masks:
    """Keep the largest-|w| surviving weights so that the selected tensors
    reach ``sparsity``.

    Used by IMP (sparsity of round r = 1-(1-p)^r, computed from the original
    size so rounding never accumulates) and OMP (one shot from the full mask).
    Weights already pruned are never revived.
    """
    return keep_top(magnitude_scores(weights), masks, sparsity, scope)


def random_mask(shapes: Tensors, sparsity: float, scope: str = "global", seed: int = 0) -> Masks:
    """A uniformly random mask with exactly ``(1-s)·N`` active weights, on
    each tensor's device."""
    scores = random_scores(shapes, seed)
    eligible = {n: torch.ones(t.shape, dtype=torch.bool) for n, t in shapes.items()}
    masks = keep_top(scores, eligible, sparsity, scope)
    return {n: m.to(shapes[n].device) for n, m in masks.items()}
