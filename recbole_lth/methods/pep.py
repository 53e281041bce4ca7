"""PEP: learnable embedding sizes by soft-threshold pruning (Liu et al., ICLR 2021).

Search, then retrain (PEP §4, App. A.3):

1. *Search.*  On a copy of the model loaded with the saved initial weights,
   every selected tensor V is used through the reparametrisation
   ``Ṽ = sign(V) · relu(|V| - sigmoid(s))`` (:class:`SoftThreshold`, registered
   with ``torch.nn.utils.parametrize``: RecBole's model code is unchanged and
   reads ``Ṽ`` wherever it reads the weight).  The learnable threshold ``s``
   (granularity ``pep_granularity``) is trained jointly with the model by
   RecBole's own trainer; autograd of the expression gives the paper's
   sub-gradient (Eq. 11: ∂Ṽ/∂V is 1 where the weight survives, 0 where the
   threshold cuts it).  After every optimizer step a hook counts the zeros of
   Ṽ on the device and, the first time the sparsity reaches each of
   ``target_sparsities``, snapshots the margins ``|V| - sigmoid(s)`` with
   ``torch.where`` (no host sync per step).  Once per epoch (one sync) the
   search stops if every target has been recorded; otherwise it stops at
   ``epochs``.
2. *Retrain.*  For each recorded target, the mask keeps exactly
   ``round((1 - target) · N)`` weights: the top of the recorded margins, i.e.
   every weight Ṽ kept at the crossing step plus, where that step overshot the
   target, the pruned weights closest to their threshold.  The survivors are
   rewound to the saved initial values (PEP §4.2 / App. A.6) and trained by
   ``Run.ticket`` on the plain model (no threshold), selected on validation.

The search's masks and costs are saved once (``search/pep.pt`` and
``search/pep.json`` in the run directory), so a re-run resumes without
searching again.
"""
from __future__ import annotations

import copy
import logging
import math
from time import perf_counter

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from recbole_lth.backbones import table_axes
from recbole_lth.core import paths, rebind
from recbole_lth.core.errors import search_diverges
from recbole_lth.core.pruning import keep_top, kept_count
from recbole_lth.core.settings import choice_key, number_key
from recbole_lth.engine.run import RowFields, TicketSpec
from recbole_lth.engine.trainer import TrainingHook, hooked_trainer, invalidate_caches, train
from recbole_lth.methods.base import Method, stored_masks, target_masks
from recbole_lth.sparse.row_adam import RowAdam
from recbole_lth.sparse.schedule import SparsitySchedule

logger = logging.getLogger("recbole_lth")

GRANULARITIES = ("global", "dimension", "feature", "feature_dimension")
PRESSURES = ("schedule", "l2")


class SoftThreshold(nn.Module):
    """``v -> sign(v) · relu(|v| - g)`` with ``g = sigmoid(s) · exp(b)`` (PEP
    Eq. 8 with g = sigmoid; ``b`` is the search's shared pressure, 0 for the
    paper's pure form) and a learnable ``s`` that broadcasts over ``v``."""

    def __init__(self, shape, init: float, device=None, offset: torch.Tensor | None = None):
        super().__init__()
        self.s = nn.Parameter(torch.full(tuple(shape), float(init), device=device))
        self.offset = offset  # a 0-d tensor shared by a group of tables, moved in place

    def _scale(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.offset is None else g * torch.exp(self.offset)

    def threshold(self) -> torch.Tensor:
        return self._scale(torch.sigmoid(self.s))

    def row_threshold(self, index: torch.Tensor, lookup=F.embedding) -> torch.Tensor:
        """The threshold of the rows ``index`` looks up (an embedding's batch);
        ``lookup(index, s)`` reads the rows of ``s`` (a :class:`RowAdam`'s, so
        that only those rows get a gradient)."""
        if self.s.shape[0] == 1:  # global / dimension: shared by every row
            return self.threshold()
        return self._scale(torch.sigmoid(lookup(index, self.s)))

    @staticmethod
    def cut(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return torch.sign(v) * torch.relu(v.abs() - threshold)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.cut(v, self.threshold())


def gathered_forward(module: nn.Embedding, soft: SoftThreshold, lookup=F.embedding):
    """An embedding lookup that thresholds only the looked-up rows.

    The loss sees only those rows, so ``Ṽ[index]`` computed from ``V[index]``
    and ``s[index]`` gives the same loss and the same gradients for V and s as
    thresholding the whole table first, at the cost of the batch instead of
    the table.  ``module.weight`` (the whole thresholded table, through the
    parametrization) stays what full-sort scoring and LightGCN read.
    """
    original = module.parametrizations.weight.original

    def forward(index: torch.Tensor) -> torch.Tensor:
        v = F.embedding(index, original, module.padding_idx, module.max_norm, module.norm_type,
                        module.scale_grad_by_freq, module.sparse)
        return soft.cut(v, soft.row_threshold(index, lookup))

    return forward


def threshold_shape(shape, granularity: str, feature_axis: int = 0) -> tuple:
    """Shape of ``s`` for a tensor of ``shape``: one value (global), one per
    embedding dimension (the axes other than ``feature_axis``), one per feature
    (row), or one per entry."""
    shape = tuple(shape)
    if granularity == "global":
        return (1,) * len(shape)
    if granularity == "feature_dimension":
        return shape
    if granularity == "feature":
        return tuple(n if axis == feature_axis else 1 for axis, n in enumerate(shape))
    if granularity == "dimension":
        return tuple(1 if axis == feature_axis else n for axis, n in enumerate(shape))
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def final_sparsity(targets) -> float:
    """Where the schedule steers: a little past the largest target, so that it is crossed, not approached."""
    return 1.0 - 0.75 * (1.0 - max(targets))


def pressure_schedule(schedule_steps, final: float) -> SparsitySchedule:
    """What the pressure steers to: ``final · (t/T)³`` (``cubic_late``), a
    ramp that prunes little while the model learns and most near the end of
    ``schedule_steps`` (a target's mask is only as good as the model it is
    recorded from), then ``final``."""
    return SparsitySchedule(final=final, end=schedule_steps, shape="cubic_late")


def scheduled_sparsity(step: int, schedule_steps: int, final: float) -> float:
    """The sparsity the pressure steers to at ``step`` (:func:`pressure_schedule`)."""
    return pressure_schedule(schedule_steps, final).at(step)


# How fast the pressure b (log of the threshold scale) follows the schedule:
# b += GAIN * (scheduled - actual sparsity) per step.  The sparsity changes by
# at most ~0.5 per unit of b (it would take every weight to sit within a
# factor e of the threshold), so GAIN * 0.5 < 2 keeps this integral
# controller stable; at 1 a lag of 0.01 closes within a few steps.
GAIN = 1.0


class PepSearch(TrainingHook):
    """Soft-threshold search on a copy of ``run.model``; records one margin
    snapshot per (target, tensor group) the first time the target is reached.

    ``gathered``: embedding tables threshold only the rows a batch looks up
    (:func:`gathered_forward`); ``pressure``: ``"schedule"`` adds the shared
    offset ``b`` steered so that the sparsity follows :func:`scheduled_sparsity`,
    ``"l2"`` is the paper's form (the L2 on s alone raises the thresholds).
    ``host_check``: detect a crossing with a host read (free on CPU) and
    snapshot only then; otherwise (CUDA, no host sync per step) every check
    writes the margins into the next target's slot or a scratch slot with one
    ``index_copy_``.  Both record the same masks.
    ``row_sparse`` (off by default with ``learner: adam``, always on with
    ``sparse_adam``, ignored with any other learner): the
    ``s`` of a gathered table (one per row or entry) is trained by a
    :class:`RowAdam`, which updates only the rows the step looked up: O(batch),
    but a different algorithm, and on ml-100k BPR its 0.8 and 0.9 tickets
    lost 9% and 22% test Recall@20 (docs/pep.md), so the default keeps
    PEP's dense Adam on s.  ``check_every``: count
    the kept weights (and record, and move the pressure) every that many
    steps and at each epoch's end; default: 1 if a selected tensor is updated
    whole, else the table-to-lookup ratio measured at the first step, so that
    the count costs one step's lookups on average.
    """

    def __init__(self, run, targets: list[float], gathered: bool = True, pressure: str | None = None,
                 host_check: bool | None = None, row_sparse: bool = False, check_every: int | None = None):
        settings = run.settings
        self.run = run
        self.targets = list(targets)
        self.pressure = pressure or settings["pep_pressure"]
        self.model = copy.deepcopy(run.model)
        self.model.load_state_dict(run.init_state())
        invalidate_caches(self.model)
        device = torch.device(run.device)
        self.host_check = device.type == "cpu" if host_check is None else host_check
        learner = str(run.config["learner"]).lower()
        # Under sparse_adam every table is lazy already: its thresholds follow, and the step is O(batch).
        row_sparse = (bool(row_sparse) and learner == "adam") or learner == "sparse_adam"
        self.check_every = check_every
        names = list(run.prunable)
        # Tensor groups whose sparsity is compared with the targets: all
        # selected tensors together (global scope) or each on its own.
        self.groups = [names] if run.scope == "global" else [[n] for n in names]
        self.offsets = [torch.zeros((), device=device) for _ in self.groups]
        group_of = {n: g for g, group in enumerate(self.groups) for n in group}
        self.thresholds: dict[str, SoftThreshold] = {}
        self.originals: dict[str, torch.Tensor] = {}
        self.gathered: list[str] = []
        self.row_adams: dict[str, RowAdam] = {}
        self.scratch: tuple[torch.Tensor, ...] | None = None  # count_kept's buffers
        axes = table_axes(self.model, names)
        for name in names:
            module_name, tensor_name = name.rsplit(".", 1)
            module = self.model.get_submodule(module_name)
            weight = getattr(module, tensor_name)
            # "feature" = one user's or item's vector: a row, or an input layer's column.
            axis = axes[name][1] if axes[name] else 0
            shape = threshold_shape(weight.shape, settings["pep_granularity"], axis)
            offset = self.offsets[group_of[name]] if self.pressure == "schedule" else None
            soft = SoftThreshold(shape, settings["pep_init"], device=weight.device, offset=offset)
            parametrize.register_parametrization(module, tensor_name, soft)
            self.thresholds[name] = soft
            self.originals[name] = module.parametrizations[tensor_name].original
            if gathered and isinstance(module, nn.Embedding) and tensor_name == "weight" and axis == 0:
                self._gather(name, module, soft, row_sparse)
        self.numel = [sum(self.originals[n].numel() for n in group) for group in self.groups]
        # A target is reached when a group's nonzero count is at most the
        # count its ticket keeps (integer comparison, exact).
        self.keep = torch.tensor(
            [[kept_count(numel, t) for t in self.targets] for numel in self.numel], device=device, dtype=torch.long,
        )
        shape = self.keep.shape
        self.recorded = torch.zeros(shape, dtype=torch.bool, device=device)
        self.step_at = torch.full(shape, -1, dtype=torch.long, device=device)
        self.nonzero_at = torch.full(shape, -1, dtype=torch.long, device=device)
        n_targets = len(self.targets)
        if self.host_check:
            self.snapshots: dict[tuple[int, int], dict] = {}  # (group, target) -> margins
        else:
            # Per group: one margin slot per target plus a scratch slot (index
            # n_targets) that every step without a crossing writes into.
            self.slots = [torch.zeros((n_targets + 1, numel), device=device) for numel in self.numel]
            self.source = torch.full(shape, n_targets, dtype=torch.long, device=device)
        self.step = 0
        self.step_tensor = torch.zeros((), dtype=torch.long, device=device)
        self.steps_per_epoch = max(1, len(run.train_data))
        self.schedule_steps = max(1, round(settings["pep_schedule_epochs"] * self.steps_per_epoch))
        self.final_sparsity = final_sparsity(self.targets)
        self.schedule = pressure_schedule(self.schedule_steps, self.final_sparsity)

    def _gather(self, name: str, module: nn.Embedding, soft: SoftThreshold, row_sparse: bool) -> None:
        lookup = F.embedding
        if row_sparse and soft.s.shape[0] > 1:  # a shared s (global, dimension) is tiny: plain Adam
            adam = RowAdam(soft.s, self.threshold_lr(), self.run.settings["pep_weight_decay"],
                           fused=bool(self.run.config["fused_optimizer"]))
            self.row_adams[name] = adam
            lookup = adam.lookup
        rebind.put(module, "forward", gathered_forward(module, soft, lookup))
        self.gathered.append(name)

    def threshold_lr(self) -> float:
        lr = self.run.settings.get("pep_lr")
        return self.run.config["learning_rate"] if lr is None else lr

    @torch.no_grad()
    def margin(self, name: str) -> torch.Tensor:
        """``|V| - threshold``: positive exactly where Ṽ is nonzero."""
        return self.originals[name].abs() - self.thresholds[name].threshold()

    @torch.no_grad()
    def count_kept(self, name: str) -> torch.Tensor:
        """``count_nonzero(|V| > threshold)`` on the device, in reused buffers:
        fresh table-sized temporaries page-fault on every count with glibc's
        malloc (measured: most of the count's cost)."""
        v, soft = self.originals[name], self.thresholds[name]
        if self.scratch is None:
            largest = max(t.numel() for t in self.originals.values())
            self.scratch = (v.new_empty(largest), v.new_empty(largest), v.new_empty(largest, dtype=torch.bool))
        size, magnitude, threshold, kept = v.numel(), *self.scratch
        magnitude, kept = magnitude[:size].view_as(v), kept[:size].view_as(v)
        torch.abs(v, out=magnitude)
        if soft.s.shape == v.shape:  # the same floats as soft.threshold(), written in place
            threshold = torch.sigmoid(soft.s, out=threshold[:size].view_as(v))
            if soft.offset is not None:
                threshold.mul_(torch.exp(soft.offset))
        else:  # a shared s: its threshold is small
            threshold = soft.threshold()
        return torch.count_nonzero(torch.gt(magnitude, threshold, out=kept))

    @torch.no_grad()
    def _group_margins(self, g: int) -> torch.Tensor:
        return torch.cat([self.margin(n).flatten() for n in self.groups[g]])

    @torch.no_grad()
    def record(self) -> None:
        """Bookkeeping after a step (or before the first one): count the kept
        weights on the device, snapshot the margins of a target crossed now,
        and move the pressure towards the scheduled sparsity."""
        nonzero = torch.stack([sum(self.count_kept(n) for n in group) for group in self.groups])
        newly = (nonzero.unsqueeze(1) <= self.keep) & ~self.recorded
        self.recorded |= newly
        self.step_at = torch.where(newly, self.step_tensor, self.step_at)
        self.nonzero_at = torch.where(newly, nonzero.unsqueeze(1), self.nonzero_at)
        if self.host_check:
            if bool(newly.any()):
                for g, t in newly.nonzero().tolist():
                    self.snapshots[(g, t)] = self._group_margins(g).clone()
        else:
            n_targets = len(self.targets)
            for g in range(len(self.groups)):
                # The first target crossed now gets the slot; others crossed at
                # the same step read the same slot.
                first = torch.where(newly[g].any(), newly[g].int().argmax(), n_targets)
                self.slots[g].index_copy_(0, first.view(1), self._group_margins(g).unsqueeze(0))
                self.source[g] = torch.where(newly[g], first, self.source[g])
        if self.pressure == "schedule":
            wanted = self.schedule.at(self.step)
            for g, offset in enumerate(self.offsets):
                offset += GAIN * (wanted - (1.0 - nonzero[g].double() / self.numel[g])).to(offset.dtype)

    def recorded_margins(self, g: int, t: int) -> torch.Tensor:
        if self.host_check:
            return self.snapshots[(g, t)]
        return self.slots[g][int(self.source[g, t])]

    def after_step(self, trainer) -> bool:
        updated = sum(adam.step() for adam in self.row_adams.values())
        self.step += 1
        self.step_tensor += 1
        if self.check_every is None:
            self.check_every = self._check_interval(updated)
        epoch_end = self.step % self.steps_per_epoch == 0
        if epoch_end or self.step % self.check_every == 0:
            self.record()
        # One host sync per epoch: stop once every target is recorded.
        return epoch_end and bool(self.recorded.all())

    def _check_interval(self, updated: int) -> int:
        """Steps between counts: the count reads every selected tensor, so when
        a step updates only ``updated`` entries of them (all row-sparse),
        counting every ``total // updated`` steps costs about one step's
        lookups; a tensor updated whole already costs the table, so count
        every step."""
        if len(self.row_adams) < len(self.originals) or updated == 0:
            return 1
        return max(1, sum(self.numel) // updated)

    def optimizer_groups(self) -> list[dict]:
        """Model weights as RecBole sets them; the thresholds with their own
        learning rate and L2 (PEP's code: Adam's weight decay on s too)."""
        threshold_ids = {id(t.s) for t in self.thresholds.values()}
        weights = [p for p in self.model.parameters() if id(p) not in threshold_ids]
        # The row-sparse thresholds are stepped by their RowAdam, after this optimizer.
        dense = [t.s for n, t in self.thresholds.items() if n not in self.row_adams]
        groups = [{"params": weights}]
        if dense:
            groups.append({"params": dense, "lr": self.threshold_lr(),
                           "weight_decay": self.run.settings["pep_weight_decay"]})
        return groups

    def trainer(self):
        """RecBole's trainer for the search's model, its optimizer holding the
        thresholds, with the bookkeeping after every step (:meth:`after_step`;
        the caller removes ``self.step_hook``, or closes the trainer)."""
        config = self.run.config
        trainer = hooked_trainer(config, self.model, self.optimizer_groups(), hooks=(self,),
                                 tensorboard_dir=self.run.paths.tensorboard / f"{self.run.method}_search")
        self.step_hook = trainer.step_handle
        self.record()  # a target already met by the initial thresholds is recorded at step 0
        return trainer

    def fit(self) -> dict:
        """Run the search; return the recorded masks and the search's costs."""
        run, config = self.run, self.run.config
        run.reseed()
        trainer = self.trainer()
        started = perf_counter()
        try:
            with search_diverges(
                "pep's threshold search", lambda: f"epoch {self.step // self.steps_per_epoch}", run.run_dir,
                f"learning_rate (now {config['learning_rate']}) or pep_lr (now {run.settings.get('pep_lr')})",
            ):
                stopped_early = train(trainer, run.train_data, None, show_progress=bool(config["show_progress"]))
        finally:
            trainer.close()
        seconds = perf_counter() - started
        return self._result(seconds, stopped_early)

    def _masks_at(self, t: int, target: float) -> dict:
        """Exactly ``round((1 - target) · N)`` kept per group: the top of the
        margins recorded when the target was crossed."""
        masks = {}
        for g, group in enumerate(self.groups):
            margins = self.recorded_margins(g, t)
            flat = {"all": margins}
            kept = keep_top(flat, {"all": torch.ones_like(margins, dtype=torch.bool)}, target)["all"]
            offset = 0
            for n in group:
                size = self.originals[n].numel()
                masks[n] = kept[offset:offset + size].view_as(self.originals[n]).cpu()
                offset += size
        return masks

    def _result(self, seconds: float, stopped_early: bool) -> dict:
        names = list(self.run.prunable)
        recorded = self.recorded.all(dim=0).cpu().tolist()
        step_at = self.step_at.max(dim=0).values.cpu().tolist()
        nonzero_at = self.nonzero_at.clamp(min=0).sum(dim=0).cpu().tolist()
        total = sum(self.numel)
        masks, targets = {}, []  # masks: "<target index>/<tensor name>" -> bool mask
        for t, target in enumerate(self.targets):
            entry = {"target_sparsity": target, "reached": bool(recorded[t])}
            if recorded[t]:
                masks.update(stored_masks(t, self._masks_at(t, target)))
                entry.update(
                    search_step=int(step_at[t]),
                    search_epoch=max(0, (int(step_at[t]) - 1) // self.steps_per_epoch),
                    pep_sparsity=round(1.0 - nonzero_at[t] / total, 6),
                )
            targets.append(entry)
        final = {n: float((self.margin(n) <= 0).float().mean()) for n in names}
        return {
            "masks": masks,
            "meta": {
                "targets": targets,
                "search_seconds": round(seconds, 3),
                "search_steps": self.step,
                "search_epochs": -(-self.step // self.steps_per_epoch),
                "steps_per_epoch": self.steps_per_epoch,
                "stopped_early": stopped_early,
                "pressure": self.pressure,
                "gathered_tables": self.gathered,
                "row_sparse_thresholds": list(self.row_adams),
                "check_every": self.check_every,
                "final_sparsity": {n: round(v, 6) for n, v in final.items()},
            },
        }


def short_schedule(settings: dict, epochs) -> str | None:
    """Why ``schedule`` pressure cannot reach the largest target: ``epochs``
    (the search's limit) ends the search before ``pep_schedule_epochs``, where
    the ramp is still at ``final · (epochs / T)³``; None when it can."""
    schedule = settings["pep_schedule_epochs"]
    if settings["pep_pressure"] != "schedule" or epochs >= schedule:
        return None
    final = final_sparsity(settings["target_sparsities"])
    return (f"epochs ({epochs}, the search's limit) ends the search before pep_schedule_epochs ({schedule:g}), "
            f"with the scheduled sparsity at {scheduled_sparsity(epochs, schedule, final):.3f}; "
            f"raise epochs to at least {math.ceil(schedule) + 1}, or lower pep_schedule_epochs")


def unreached_note(settings: dict, epochs, meta: dict) -> str:
    """The note of a target the search never reached, with what to change."""
    reason = short_schedule(settings, epochs) or (
        "raise epochs (the search's limit)" + (", or use pep_pressure: schedule"
                                               if settings["pep_pressure"] == "l2" else ""))
    return (f"not reached: the search ended after {meta['search_epochs']} epochs at sparsity "
            f"{meta['final_sparsity']}; {reason}")


def search_masks(run, targets) -> tuple[dict, dict]:
    """The search's result, from the run directory if a previous run saved it."""
    def search() -> dict:
        logger.info(
            f"pep: searching thresholds ({run.settings['pep_granularity']}, init {run.settings['pep_init']}) "
            f"for sparsities {targets}, at most {run.config['epochs']} epochs"
        )
        short = short_schedule(run.settings, run.config["epochs"])
        if short:
            logger.warning(f"pep: the largest target {max(targets)} will not be reached: {short}")
        return PepSearch(run, targets).fit()

    return run.searched(search)


def plan(run) -> None:
    targets = list(run.settings["target_sparsities"])
    masks, meta = search_masks(run, targets)
    for t, entry in enumerate(meta["targets"]):
        target = entry["target_sparsity"]
        key = paths.target_ticket(run.method, target)
        if not entry["reached"]:
            note = unreached_note(run.settings, run.config["epochs"], meta)
            logger.warning(f"pep: target sparsity {target} {note}; no ticket trained")
            run.add_row({
                **run.row_start(key, t + 1, target),
                "search_seconds": meta["search_seconds"], "search_epochs": meta["search_epochs"], "note": note,
            })
            continue
        mask = target_masks(run, masks, t)
        run.ticket(TicketSpec(
            key, round_idx=t + 1, target_sparsity=target, masks=mask, start_state=run.init_state(),
            hooks=(RowFields({  # the search's crossing point and cost
                "pep_sparsity": entry["pep_sparsity"], "search_step": entry["search_step"],
                "search_epoch": entry["search_epoch"], "search_seconds": meta["search_seconds"],
                "search_epochs": meta["search_epochs"],
            }),),
        ))


KEYS = (
    choice_key("pep_granularity", "the shape of s: one per tensor, per dimension, per user/item, per entry",
               GRANULARITIES),
    number_key("pep_init", "initial s: threshold sigmoid(s)"),
    number_key("pep_lr", "learning rate of s (null: learning_rate)", 0, low_open=True, nullable=True),
    number_key("pep_weight_decay", "L2 on s (PEP's code: Adam's weight decay on s): with the task loss, it sets "
               "which thresholds rise", 0),
    choice_key("pep_pressure", "schedule: a shared threshold scale steered so that the sparsity follows a cubic "
               "ramp to the largest target in pep_schedule_epochs; l2: the paper's form (only the L2 on s)",
               PRESSURES),
    number_key("pep_schedule_epochs", "schedule: epochs in which the scheduled sparsity reaches the largest target",
               0, low_open=True),
)

METHOD = Method(
    "pep", "one soft-threshold search (learnable s, PEP Eq. 8; a scheduled pressure reaches every target by "
    "pep_schedule_epochs) records a mask when each target is first reached; each mask is rewound to the "
    "initial weights and retrained (PEP §4.2)", plan, keys=KEYS, scopes=("global", "per_table"),
)
