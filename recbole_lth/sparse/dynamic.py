"""Dynamic sparse training at a fixed budget: drop, grow, schedule (RigL's split).

Three swappable pieces and one update:

* a *drop score* (higher = keep): which active weights are dropped;
* a *grow score* (higher = grow): which inactive weights are regrown, and
  which steps need the dense weight gradient for it (``dense_gradient``:
  ``"never"``, ``"update_steps"`` or ``"every_step"``), so the training MACs
  follow the rule actually used;
* a *schedule*: the fraction ρ_t of active weights exchanged at step t, 0
  from ``T_end`` on (the mask is frozen);
* :func:`exchange`: one update with exactly as many weights grown as dropped.

:class:`Explorer` runs them inside one ticket's training as a gradient
observer of the mask core (the optimizer's pre-step hook, before pruned
gradients are zeroed): ``param.grad`` there is the true gradient at pruned
positions too (the forward uses the weights as stored, pruned ones exactly
zero).  ``ParameterMask.set_masks`` then zeroes the dropped weights and every
optimizer state tensor at pruned positions; a regrown weight was pruned until
now, so it is zero with zero Adam moments, and the step that follows gives it
its first update from the gradient it was chosen for.
"""
from __future__ import annotations

import math
from functools import partial
from time import perf_counter

import torch
from torch import nn

from recbole_lth.core import pruning
from recbole_lth.core.optim import dense_grad, sparse_rows
from recbole_lth.engine.run import TicketHook
from recbole_lth.sparse import costs

Masks = dict[str, torch.Tensor]
Tensors = dict[str, torch.Tensor]

DECAYS = ("cosine", "linear", "constant")


# ---------------------------------------------------------------- schedule
def drop_fraction(step: int, rho0: float, end_step: int, decay: str = "cosine") -> float:
    """ρ_t: the fraction of active weights exchanged at optimizer step ``step``.

    cosine: ρ₀/2·(1+cos(πt/T_end)) (the DSL paper's eq. 2); linear:
    ρ₀·(1-t/T_end); constant: ρ₀.  0 from ``end_step`` on (the mask is frozen).
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


class Schedule:
    """When the mask changes (every ``interval`` steps before ``end_step``) and by how much."""

    def __init__(self, interval: int, init_ratio: float, end_step: int, decay: str = "cosine",
                 min_ratio: float = 0.0):
        self.interval, self.init_ratio, self.end_step, self.decay = interval, init_ratio, end_step, decay
        self.min_ratio = min_ratio  # ρ's floor before T_end (the DSL authors' code: 0.005)

    def is_update_step(self, step: int) -> bool:
        return step % self.interval == 0 and step < self.end_step

    def fraction(self, step: int) -> float:
        if step >= self.end_step:
            return 0.0
        return self.min_ratio + drop_fraction(step, self.init_ratio - self.min_ratio, self.end_step, self.decay)


# ------------------------------------------------------------- drop scores
def magnitude_drop(weights: Tensors) -> Tensors:
    """|w|: the smallest active weights are dropped (DSL's pruning principle)."""
    return pruning.magnitude_scores(weights)


DROP_SCORES = {"magnitude": magnitude_drop}


# ------------------------------------------------------------- grow scores
class GrowScore:
    """Scores of the inactive weights; the highest are regrown."""

    # Which steps need the dense weight gradient (for the MACs accounting).
    dense_gradient = "never"

    def observe(self, grads: dict, rows: dict | None = None) -> None:
        """Called every step with the full gradients (before masking);
        ``rows``: per tensor, the only rows where its gradient can be non-zero
        (:class:`LookedUpRows`), or absent: anywhere."""

    def scores(self, weights: Tensors, grads: dict) -> Tensors:
        raise NotImplementedError

    def reset(self) -> None:
        """Called after each update."""

    def bind(self, mask) -> None:
        """Called once per ticket with its mask (attached to the optimizer)."""


class GradientGrow(GrowScore):
    """|grad| of the update step's batch (the DSL paper's growth principle, RigL)."""

    dense_gradient = "update_steps"

    def scores(self, weights, grads):
        return {n: grads[n].detach().abs().float() if grads.get(n) is not None
                else torch.zeros_like(w, dtype=torch.float) for n, w in weights.items()}


class AccumulatedGradientGrow(GrowScore):
    """|Σ grad| over the steps since the last update: every row a batch
    looked up in the interval has a score, not only the update step's rows."""

    dense_gradient = "every_step"

    def __init__(self):
        self.total: dict[str, torch.Tensor] = {}

    def observe(self, grads, rows=None):
        for name, grad in grads.items():
            if grad is None:
                continue
            ids = (rows or {}).get(name)
            if grad.is_sparse:  # learner: sparse_adam; its rows are the step's lookups
                if name not in self.total:
                    self.total[name] = torch.zeros(grad.shape, dtype=grad.dtype, device=grad.device)
                self.total[name].index_add_(0, *sparse_rows(grad))
            elif name not in self.total:
                self.total[name] = grad.detach().clone()
            elif ids is None:
                self.total[name].add_(grad)
            else:
                add_rows(self.total[name], grad, ids)

    def scores(self, weights, grads):
        return {n: self.total[n].abs().float() if n in self.total else torch.zeros_like(w, dtype=torch.float)
                for n, w in weights.items()}

    def reset(self):
        for total in self.total.values():
            total.zero_()


def add_rows(total: torch.Tensor, grad: torch.Tensor, ids: torch.Tensor) -> None:
    """``total += grad`` where ``grad`` is zero outside rows ``ids``, in
    O(len(ids)) and bit for bit the same (x + 0 = x).  A repeated id writes
    the same sum twice, so no ``unique`` (a host sync on CUDA) is needed."""
    total.index_put_((ids,), total.index_select(0, ids) + grad.index_select(0, ids))


class LookedUpRows:
    """The rows each prunable ``nn.Embedding`` table was looked up at since
    the last :meth:`take` (forward hooks, training only).  A table's gradient
    is zero elsewhere when lookups are its only use in the loss; the first
    :meth:`verify` checks that once on a real gradient and drops a table read
    whole (LightGCN's propagation, a full-sort distillation loss)."""

    def __init__(self, model: nn.Module, names):
        self.ids: dict[str, list] = {}
        self.handles = {}
        self.devices: dict[str, torch.device] = {}  # where an empty step's ids live
        self.verified = False
        for name in names:
            module_name, _, attribute = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            if attribute == "weight" and isinstance(module, nn.Embedding):
                self.ids[name] = []
                self.devices[name] = module.weight.device
                self.handles[name] = module.register_forward_hook(partial(self.record, name))

    def record(self, name, module, inputs, output) -> None:
        if torch.is_grad_enabled():  # evaluation looks rows up without a gradient
            self.ids[name].append(inputs[0].reshape(-1))

    def take(self) -> dict[str, torch.Tensor]:
        rows = {n: torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long, device=self.devices[n])
                for n, ids in self.ids.items()}
        for ids in self.ids.values():
            ids.clear()
        return rows

    @torch.no_grad()
    def verify(self, grads: dict, rows: dict) -> None:
        """Keep only the tables whose gradient is zero outside their looked-up rows (one O(table) check)."""
        for name in list(self.ids):
            grad = grads.get(name)
            outside = torch.ones(grad.shape[0], dtype=torch.bool, device=grad.device) if grad is not None else None
            if outside is not None:
                outside[rows[name].to(grad.device)] = False
            if grad is None or bool(grad[outside].any()):
                self.handles.pop(name).remove()
                del self.ids[name]
                rows.pop(name, None)
        self.verified = True

    def remove(self) -> None:
        for handle in self.handles.values():
            handle.remove()
        self.handles, self.ids = {}, {}


class CumulativeGradientGrow(AccumulatedGradientGrow):
    """|Σ grad| since training began (never reset): how far dense training
    would have pushed an inactive weight by now.  A weight dropped early
    keeps its history, so one that keeps being pulled comes back."""

    def reset(self):
        pass


class MomentumGrow(GrowScore):
    """|the optimizer's first moment| (Adam's ``exp_avg``, SGD's momentum
    buffer): the DSL authors' ``growth='momentum'`` (Sparse Momentum,
    Dettmers & Zettlemoyer 2019).  It has a value at an inactive weight only
    while the optimizer keeps tracking it (``dsl_optimizer_state: warm``),
    which needs the dense gradient every step."""

    dense_gradient = "every_step"
    BUFFERS = ("exp_avg", "momentum_buffer")

    def bind(self, mask):
        self.mask = mask

    def scores(self, weights, grads):
        state = self.mask.optimizer.state if self.mask.optimizer is not None else {}
        return {n: self.moment(state.get(self.mask.params[n], {}), w) for n, w in weights.items()}

    def moment(self, state: dict, weight: torch.Tensor) -> torch.Tensor:
        for key in self.BUFFERS:
            if key in state:
                return state[key].detach().abs().float()
        return torch.zeros_like(weight, dtype=torch.float)


class RandomGrow(GrowScore):
    """Uniform scores (SET, Mocanu et al. 2018): needs no gradient."""

    def __init__(self, seed: int = 0):
        self.generator = None
        self.seed = seed

    def scores(self, weights, grads):
        device = next(iter(weights.values())).device
        if self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return {n: torch.rand(w.shape, generator=self.generator, device=device) for n, w in weights.items()}


GROW_SCORES = {"gradient": GradientGrow, "accumulated_gradient": AccumulatedGradientGrow,
               "cumulative_gradient": CumulativeGradientGrow, "momentum": MomentumGrow, "random": RandomGrow}
# Grow scores that read optimizer state at inactive weights: only a warm state has it.
NEEDS_WARM_STATE = ("momentum",)


# ------------------------------------------------------------------ update
def exchange_counts(active: dict[str, int], numel: dict[str, int], fraction: float, scope: str):
    """How many weights to drop (= to regrow): ``round(ρ·active)``, capped by
    the inactive weights available to regrow; one count over all tensors
    (``global``) or one per tensor (``per_table``)."""
    if scope == "per_table":
        return {n: min(int(round(fraction * active[n])), numel[n] - active[n]) for n in active}
    total_active = sum(active.values())
    return min(int(round(fraction * total_active)), sum(numel.values()) - total_active)


@torch.no_grad()
def exchange(drop_scores: Tensors, grow_scores: Tensors, masks: Masks, counts, regrow_dropped: bool = False
             ) -> Masks:
    """Drop ``counts`` active weights with the lowest drop score and grow as
    many with the highest grow score: the budget stays exact.  The growth pool
    is the weights inactive in ``masks`` (never one dropped now), or with
    ``regrow_dropped`` every weight not kept (the DSL authors' code: a weight
    dropped and regrown at once keeps its value).  On-device ``topk``, no sort."""
    lowest_first = {n: -s for n, s in drop_scores.items()}
    scope = "per_table" if isinstance(counts, dict) else "global"
    dropped = pruning.keep_top_k(lowest_first, masks, counts, scope)
    kept = {n: masks[n] & ~dropped[n] for n in masks}
    pool = {n: ~(kept[n] if regrow_dropped else masks[n]) for n in masks}
    grown = pruning.keep_top_k(grow_scores, pool, counts, scope)
    return {n: kept[n] | grown[n] for n in masks}


# --------------------------------------------------------------- the hook
class Explorer(TicketHook):
    """Runs the exploration inside one ticket's training (a grad observer).

    Per step it compares a Python int (and lets the grow score observe the
    gradient, when it accumulates); at an update step it computes the two
    scores and calls :func:`exchange` and ``mask.set_masks``.  Columns it
    adds: ``dsl_updates`` (explorations that changed the mask),
    ``dsl_exchanged`` (weights dropped and regrown, summed), ``dsl_end_step``
    (T_end), ``dsl_frozen_epoch`` (the epoch the mask froze in), ``explore_seconds``
    (wall time of the updates; on CUDA synchronised at update steps only),
    ``explore_fraction`` (that over the training wall time, from the start of
    ``fit`` to the end of the last training epoch) and
    ``macs_train_rel``/``macs_infer_rel`` (:mod:`recbole_lth.sparse.costs`).
    """

    def __init__(self, schedule: Schedule, scope: str, drop=magnitude_drop, grow: GrowScore | None = None,
                 hold_patience: bool = True, regrow_dropped: bool = False, warm_state: bool = False):
        self.schedule, self.scope = schedule, scope
        self.drop, self.grow = drop, grow or GradientGrow()
        self.regrow_dropped, self.warm_state = regrow_dropped, warm_state
        # Early stopping counts only from T_end: a validation dip after an
        # exploration must not end the ticket before its schedule has run.
        self.hold_patience = hold_patience
        self.updates = self.exchanged = 0
        self.explore_seconds = 0.0
        self.frozen_epoch = None

    def attach(self, run, trainer) -> None:
        mask = trainer.mask
        self.mask, self.model = mask, trainer.model
        self.batch_size = trainer.config["train_batch_size"]
        self.device = next(iter(mask.params.values())).device
        # The budget never changes: count it once per ticket (one host sync).
        # Under global scope only its total is used (tables may trade weights).
        self.active = {n: int(m.sum()) for n, m in mask.masks.items()}
        self.numel = {n: m.numel() for n, m in mask.masks.items()}
        # Per-table active counts may move between tables (global scope):
        # accumulate count × steps on device for the training MACs.
        self._table_active = self._count_tables()
        self._active_steps = torch.zeros_like(self._table_active, dtype=torch.float64)
        self._since_step = 0
        self._started = self._trained_until = perf_counter()
        # A grow score that sums every step's gradient reads only the rows the
        # step looked up: O(batch), not O(table), with the same sums.
        self.rows = LookedUpRows(trainer.model, mask.params) if isinstance(self.grow, AccumulatedGradientGrow) else None
        self.grow.bind(mask)
        mask.grad_observers.append(self.observe)
        if self.warm_state:
            mask.keep_optimizer_state()

    def _count_tables(self) -> torch.Tensor:
        return torch.stack([m.sum() for m in self.mask.masks.values()])

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def epoch_end(self, trainer, epoch_idx) -> None:
        self._trained_until = perf_counter()
        if self.mask.step_count >= self.schedule.end_step and self.frozen_epoch is None:
            self.frozen_epoch = epoch_idx

    def patience_counts(self, trainer, epoch_idx) -> bool:
        """No early stop while the mask still changes: RecBole's early stopping counts from the freeze."""
        return not self.hold_patience or self.frozen_epoch is not None

    def observe(self, mask) -> None:
        step = mask.step_count
        if step >= self.schedule.end_step:
            if self.rows is not None:
                self.rows.remove()
            return
        grads = {n: p.grad for n, p in mask.params.items()}
        if self.grow.dense_gradient == "every_step":
            self.grow.observe(grads, self.looked_up(grads))
        if not self.schedule.is_update_step(step):
            return
        grads = {n: dense_grad(g) for n, g in grads.items()}  # a sparse_adam table's, once per update
        counts = exchange_counts(self.active, self.numel, self.schedule.fraction(step), self.scope)
        exchanged = sum(counts.values()) if isinstance(counts, dict) else counts
        if exchanged == 0:
            return
        self._sync()
        started = perf_counter()
        weights = mask.weights()
        new_masks = exchange(self.drop(weights), self.grow.scores(weights, grads), mask.masks, counts,
                             self.regrow_dropped)
        self.grow.reset()
        self._active_steps += self._table_active * (step - self._since_step)
        mask.set_masks(new_masks)
        self._table_active, self._since_step = self._count_tables(), step
        self._sync()
        self.explore_seconds += perf_counter() - started
        self.updates += 1
        self.exchanged += exchanged

    def looked_up(self, grads) -> dict | None:
        if self.rows is not None and any(g is not None and g.is_sparse for g in grads.values()):
            self.rows.remove()  # a row-sparse gradient names its rows itself
            self.rows = None
        if self.rows is None:
            return None
        rows = self.rows.take()
        if not self.rows.verified:
            self.rows.verify(grads, rows)
        return rows

    def dense_gradient_fraction(self, steps: int) -> float:
        """Share of the training steps that needed the dense weight gradient."""
        if not steps or self.grow.dense_gradient == "never":
            return 0.0
        if self.grow.dense_gradient == "every_step":
            return min(steps, self.schedule.end_step) / steps
        return self.updates / steps

    def row_fields(self) -> dict:
        steps = self.mask.step_count
        active_steps = self._active_steps + self._table_active * (steps - self._since_step)
        mean_active = (active_steps / max(steps, 1)).tolist() if steps else self._table_active.tolist()
        train_densities = {n: a / self.numel[n] for n, a in zip(self.numel, mean_active)}
        # The reported model: the mask of the best validation epoch.
        infer_densities = {n: a / self.numel[n] for n, a in self.mask.report().active.items()}
        trained = self._trained_until - self._started
        return {
            "dsl_updates": self.updates,
            "dsl_exchanged": self.exchanged,
            "dsl_end_step": self.schedule.end_step,
            # The epoch in which the mask froze (0-based), empty if training ended before T_end.
            "dsl_frozen_epoch": self.frozen_epoch,
            "explore_seconds": round(self.explore_seconds, 4),
            "explore_fraction": round(self.explore_seconds / trained, 6) if trained > 0 else 0.0,
            **costs.relative_macs(
                self.model, train_densities, self.batch_size,
                dense_grad_fraction=self.dense_gradient_fraction(steps),
                infer_densities=infer_densities,
            ),
        }
