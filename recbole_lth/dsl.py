"""DSL: dynamic sparse learning at a fixed parameter budget (DSL paper, Alg. 1).

* Sparsity initialisation: the same exact-count random mask RP draws for that
  sparsity (same seed), over the model's initial weights.
* Sparse learning: RecBole's own training steps on the masked model.
* Dynamic exploration every ``dsl_update_interval`` (ΔT) optimizer steps: drop
  the ``ρ_t`` fraction of the active weights with the smallest |w| and regrow
  as many of the weights that were inactive before this update (so never one
  just dropped) with the largest |grad|.  ``ρ_t`` decays from
  ``dsl_init_ratio`` (ρ₀) to 0 at ``T_end`` (``dsl_end_step``, default
  epochs × batches per epoch), after which the mask is frozen.

The exploration runs as a gradient observer of the mask core, inside the
optimizer's pre-step hook: ``param.grad`` there is the true gradient at pruned
positions too (the forward uses the weights as stored, pruned ones exactly
zero).  ``ParameterMask.set_masks`` then zeroes the dropped weights and every
optimizer state tensor at pruned positions; a regrown weight was pruned until
now, so it is zero with zero Adam moments, and the step that follows gives it
its first update from the gradient it was chosen for.
"""
from __future__ import annotations

import logging
import math
from time import perf_counter

import torch

from recbole_lth import costs, pruning
from recbole_lth.config import check_target_sparsities
from recbole_lth.errors import ConfigError
from recbole_lth.search import Run, TicketHook

logger = logging.getLogger("recbole_lth")

DECAYS = ("cosine", "linear", "constant")

Masks = dict[str, torch.Tensor]


# ------------------------------------------------------------ pure functions
def drop_fraction(step: int, rho0: float, end_step: int, decay: str = "cosine") -> float:
    """ρ_t: the fraction of active weights exchanged at optimizer step ``step``.

    cosine: ρ₀/2·(1+cos(πt/T_end)) (the paper's eq. 2); linear: ρ₀·(1-t/T_end);
    constant: ρ₀.  0 from ``end_step`` on (the mask is frozen).
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if step >= end_step:
        return 0.0
    if decay == "cosine":
        return rho0 / 2.0 * (1.0 + math.cos(math.pi * step / end_step))
    if decay == "linear":
        return rho0 * (1.0 - step / end_step)
    return rho0


def exchange_counts(active: dict[str, int], numel: dict[str, int], fraction: float, scope: str):
    """How many weights to drop (= to regrow): ``round(ρ·active)``, capped by
    the inactive weights available to regrow; one count over all tensors
    (``global``) or one per tensor (``per_table``)."""
    if scope == "per_table":
        return {n: min(int(round(fraction * active[n])), numel[n] - active[n]) for n in active}
    total_active = sum(active.values())
    return min(int(round(fraction * total_active)), sum(numel.values()) - total_active)


@torch.no_grad()
def dsl_update(
    weights: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor | None],
    masks: Masks,
    fraction: float,
    scope: str = "global",
    active: dict[str, int] | None = None,
) -> Masks:
    """One exploration step: new masks with exactly as many active weights.

    Drops the ``fraction`` of active weights with the smallest |w| and regrows
    the same number of weights inactive in ``masks`` with the largest |grad|
    (a missing gradient counts as zero).  ``active`` are the per-tensor active
    counts if the caller knows them (the budget is constant; counting here
    costs a host sync).  Everything else is on-device ``topk``, no sort.
    """
    if active is None:
        active = {n: int(m.sum()) for n, m in masks.items()}
    numel = {n: m.numel() for n, m in masks.items()}
    counts = exchange_counts(active, numel, fraction, scope)
    if not (any(counts.values()) if isinstance(counts, dict) else counts):
        return dict(masks)
    smallest_first = {n: -w.detach().abs().float() for n, w in weights.items()}
    dropped = pruning._keep_top(smallest_first, masks, counts, scope)
    grad_score = {
        n: grads[n].detach().abs().float() if grads.get(n) is not None else torch.zeros_like(weights[n], dtype=torch.float)
        for n in weights
    }
    # Candidates are the weights inactive *before* this update, so the grown
    # set never contains a weight dropped just now.
    grown = pruning._keep_top(grad_score, {n: ~m for n, m in masks.items()}, counts, scope)
    return {n: (masks[n] & ~dropped[n]) | grown[n] for n in masks}


# ------------------------------------------------------------------ the hook
class DSLExplorer(TicketHook):
    """Runs the exploration inside one ticket's training (a grad observer).

    Per step it only compares a Python int; every ΔT steps it calls
    :func:`dsl_update` and ``mask.set_masks``.  Columns it adds: ``dsl_updates``
    (explorations that changed the mask), ``dsl_exchanged`` (weights dropped
    and regrown, summed), ``explore_seconds`` (wall time of those updates; on
    CUDA synchronised at update steps only), ``explore_fraction`` (that time
    over the training wall time, from the start of ``fit`` to the end of the
    last training epoch) and ``macs_train_rel``/``macs_infer_rel``
    (:mod:`recbole_lth.costs`).
    """

    def __init__(self, interval: int, init_ratio: float, decay: str, end_step: int, scope: str):
        self.interval, self.init_ratio, self.decay = interval, init_ratio, decay
        self.end_step, self.scope = end_step, scope
        self.updates = self.exchanged = 0
        self.explore_seconds = 0.0

    def attach(self, run, trainer) -> None:
        mask = trainer.mask
        self.mask, self.model = mask, trainer.model
        self.batch_size = trainer.config["train_batch_size"]
        self.device = next(iter(mask.params.values())).device
        # The budget never changes: count it once per ticket (one host sync).
        # Under global scope only its total is used (tables may trade weights).
        self.active = {n: int(m.sum()) for n, m in mask.masks.items()}
        # Per-table active counts may move between tables (global scope):
        # accumulate count × steps on device for the training MACs.
        self._table_active = self._count_tables()
        self._active_steps = torch.zeros_like(self._table_active, dtype=torch.float64)
        self._since_step = 0
        self._started = self._trained_until = perf_counter()
        mask.grad_observers.append(self.observe)
        trainer.epoch_callbacks.append(self._epoch_done)

    def _count_tables(self) -> torch.Tensor:
        return torch.stack([m.sum() for m in self.mask.masks.values()])

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _epoch_done(self, trainer, epoch_idx) -> None:
        self._trained_until = perf_counter()

    def observe(self, mask) -> None:
        step = mask.step_count
        if step % self.interval or step >= self.end_step:
            return
        fraction = drop_fraction(step, self.init_ratio, self.end_step, self.decay)
        counts = exchange_counts(self.active, {n: m.numel() for n, m in mask.masks.items()}, fraction, self.scope)
        exchanged = sum(counts.values()) if isinstance(counts, dict) else counts
        if exchanged == 0:
            return
        self._sync()
        started = perf_counter()
        grads = {n: p.grad for n, p in mask.params.items()}
        new_masks = dsl_update(mask.weights(), grads, mask.masks, fraction, self.scope, self.active)
        self._active_steps += self._table_active * (step - self._since_step)
        mask.set_masks(new_masks)
        self._table_active, self._since_step = self._count_tables(), step
        self._sync()
        self.explore_seconds += perf_counter() - started
        self.updates += 1
        self.exchanged += exchanged

    def row_fields(self) -> dict:
        steps = self.mask.step_count
        numel = {n: p.numel() for n, p in self.mask.params.items()}
        active_steps = self._active_steps + self._table_active * (steps - self._since_step)
        mean_active = (active_steps / max(steps, 1)).tolist() if steps else self._table_active.tolist()
        train_densities = {n: a / numel[n] for n, a in zip(numel, mean_active)}
        # The reported model: the mask of the best validation epoch.
        infer_densities = {n: a / numel[n] for n, a in self.mask.report().active.items()}
        trained = self._trained_until - self._started
        return {
            "dsl_updates": self.updates,
            "dsl_exchanged": self.exchanged,
            "explore_seconds": round(self.explore_seconds, 4),
            "explore_fraction": round(self.explore_seconds / trained, 6) if trained > 0 else 0.0,
            **costs.relative_macs(
                self.model, train_densities, self.batch_size,
                dense_grad_fraction=self.updates / steps if steps else 0.0,
                infer_densities=infer_densities,
            ),
        }


# ---------------------------------------------------------------- the method
def end_step(settings: dict, steps_per_epoch: int) -> int:
    """T_end: ``dsl_end_step``, or every step of ``epochs`` epochs."""
    return settings.get("dsl_end_step") or settings["epochs"] * steps_per_epoch


def dsl(run: Run) -> None:
    settings = run.settings
    if settings["rewind_epoch"]:
        logger.warning("dsl trains from the initial weights; rewind_epoch is ignored")
    t_end = end_step(settings, len(run.train_data))
    for i, sparsity in enumerate(settings["target_sparsities"], start=1):
        # The seed RP uses for the same index: with no exploration
        # (ΔT beyond the run) a DSL ticket is exactly the RP ticket.
        masks = pruning.random_mask(run.prunable, sparsity, run.scope, seed=run.config["seed"] + i)
        explorer = DSLExplorer(
            settings["dsl_update_interval"], settings["dsl_init_ratio"], settings["dsl_decay"], t_end, run.scope
        )
        run.ticket(
            f"dsl_{sparsity:.4f}", round_idx=i, target_sparsity=sparsity, masks=masks,
            start_state=run.init_state(), hooks=(explorer,),
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(settings: dict) -> None:
    check_target_sparsities(settings)
    decay = settings.get("dsl_decay")
    if decay not in DECAYS:
        raise ConfigError("dsl_decay", decay, ", ".join(DECAYS))
    ratio = settings.get("dsl_init_ratio")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 < ratio <= 1.0:
        raise ConfigError("dsl_init_ratio", ratio, "a number in (0, 1]")
    interval = settings.get("dsl_update_interval")
    if not _is_int(interval) or interval < 1:
        raise ConfigError("dsl_update_interval", interval, "a whole number of optimizer steps >= 1")
    end = settings.get("dsl_end_step")
    if end is not None and (not _is_int(end) or end < 1):
        raise ConfigError("dsl_end_step", end, "null (epochs x batches per epoch) or a whole number >= 1")
