"""GMP: gradual magnitude pruning during one dense training (Zhu & Gupta 2017).

1. *Pruning run.*  The model trains from its saved initial weights (RecBole's
   own steps, no validation) with a mask that starts full.  After step
   ``t0 = gmp_start_epoch`` epochs' worth, every ΔT (``gmp_frequency``) steps
   and at ``gmp_end_epoch``, the smallest-|w| active weights are pruned
   through the mask core so that the sparsity is the schedule's
   (:class:`~recbole_lth.sparse.schedule.SparsitySchedule`, ``gmp_schedule``:
   Zhu & Gupta's cubic by default) towards the largest target, which it
   reaches at ``gmp_end_epoch``.  Each prune keeps an exact count with
   on-device ``topk``: the schedule is Python arithmetic on the step number,
   so no step waits for the device.  When a prune step reaches a target of
   ``target_sparsities``, the weights are first pruned to exactly that target
   and its mask recorded (with the weights, for ``trained`` tickets); the run
   stops once every target is recorded.
2. *Tickets*, one per target, each trained by ``Run.ticket`` with its mask
   fixed, so every epoch it can select is at the target's sparsity (a denser
   epoch of the pruning run never competes) and its row reports it:

   * ``gmp_ticket: trained`` (GMP proper): the pruned model as the run left it
     at the target, trained on from that epoch to ``epochs`` (fresh optimizer,
     early stopping and model selection on validation);
   * ``gmp_ticket: rewind`` (the lottery variant): the mask rewound to the
     initial weights and retrained from epoch 0.

The pruning run's masks (and weights) are saved once (``search/gmp.pt``,
``search/gmp.json``), so a re-run resumes without pruning again.
"""
from __future__ import annotations

import math
from time import perf_counter

import torch

from recbole_lth.core import pruning
from recbole_lth.core.errors import ConfigError, search_diverges
from recbole_lth.core.masking import ParameterMask
from recbole_lth.core.paths import target_ticket
from recbole_lth.core.settings import choice_key, number_key
from recbole_lth.engine.run import RowFields, TicketSpec
from recbole_lth.engine.trainer import TrainingHook, sparse_trainer, train
from recbole_lth.methods.base import Method, ignore_rewind, stored_masks, target_masks
from recbole_lth.sparse.schedule import PRUNING_SHAPES, SparsitySchedule

TICKETS = ("trained", "rewind")


def schedule(settings: dict, steps_per_epoch: int) -> SparsitySchedule:
    """From dense at ``gmp_start_epoch`` to the largest target at ``gmp_end_epoch``, in optimizer steps."""
    start = round(settings["gmp_start_epoch"] * steps_per_epoch)
    end = max(start, round(settings["gmp_end_epoch"] * steps_per_epoch))
    return SparsitySchedule(final=max(settings["target_sparsities"]), start=start, end=end,
                            shape=settings["gmp_schedule"], every=int(settings["gmp_frequency"]))


class GradualPruning(TrainingHook):
    """The pruning run: one training whose mask follows :func:`schedule`,
    recording one exact-count mask per target (its ``after_step`` is the
    trainer's step hook)."""

    def __init__(self, run, targets: list[float]):
        self.run, self.targets = run, sorted(targets)
        self.steps_per_epoch = max(1, len(run.train_data))
        self.schedule = schedule(run.settings, self.steps_per_epoch)
        self.keep_weights = run.settings["gmp_ticket"] == "trained"
        self.step = self.prunes = 0
        self.sparsity = 0.0
        self.recorded: dict[int, dict] = {}  # target index -> step, masks, weights (on the device)

    @torch.no_grad()
    def _prune_to(self, sparsity: float) -> None:
        mask = self.mask
        mask.set_masks(pruning.magnitude_prune(mask.weights(), mask.masks, sparsity, self.run.scope))
        self.sparsity = sparsity
        self.prunes += 1

    @torch.no_grad()
    def prune(self, sparsity: float) -> None:
        """Prune to ``sparsity``, stopping first at every target it passes to record that target's mask."""
        for t, target in enumerate(self.targets):
            if t in self.recorded or target > sparsity:
                continue
            self._prune_to(target)
            weights = ({k: v.detach().clone() for k, v in self.run.model.state_dict().items()}
                       if self.keep_weights else None)
            self.recorded[t] = {"step": self.step, "masks": {n: m.clone() for n, m in self.mask.masks.items()},
                                "weights": weights}
        if sparsity > self.sparsity:
            self._prune_to(sparsity)

    def after_step(self, trainer) -> bool:
        """Python arithmetic on the step number; device work only at a prune step. True: every target recorded."""
        self.step += 1
        if not self.schedule.updates(self.step):
            return False
        self.prune(self.schedule.at(self.step))
        return len(self.recorded) == len(self.targets)

    def fit(self) -> dict:
        run, config = self.run, self.run.config
        run.restart(run.init_state())
        self.mask = ParameterMask(run.prunable)
        trainer = sparse_trainer(config, run.model, self.mask, (), run.paths.tensorboard / f"{run.method}_search",
                                 hooks=(self,))
        started = perf_counter()
        try:
            with search_diverges("gmp's pruning run", lambda: f"step {self.step}", run.run_dir,
                                 f"learning_rate (now {config['learning_rate']})"):
                if self.schedule.updates(0):  # gmp_start_epoch 0 with a target of 0: recorded before any step
                    self.prune(self.schedule.at(0))
                if len(self.recorded) < len(self.targets):
                    train(trainer, run.train_data, None, show_progress=bool(config["show_progress"]))
        finally:
            trainer.close()
        if len(self.recorded) < len(self.targets):  # the checks keep gmp_end_epoch within epochs
            raise RuntimeError(f"gmp: the pruning run ended after {self.step} steps, before its end step "
                               f"{self.schedule.end}")
        return self._result(perf_counter() - started)

    def _result(self, seconds: float) -> dict:
        stored, targets = {}, []
        for t, target in enumerate(self.targets):
            record = self.recorded[t]
            stored.update(stored_masks(t, record["masks"]))
            stored.update({f"{t}/weights/{k}": v.cpu() for k, v in (record["weights"] or {}).items()})
            targets.append({"target_sparsity": target, "search_step": record["step"],
                            "search_epoch": record["step"] // self.steps_per_epoch})
        meta = {
            "targets": targets,
            "search_seconds": round(seconds, 3),
            "search_steps": self.step,
            "search_epochs": math.ceil(self.step / self.steps_per_epoch),
            "steps_per_epoch": self.steps_per_epoch,
            "prunes": self.prunes,
            "schedule": {"shape": self.schedule.shape, "start_step": self.schedule.start,
                         "end_step": self.schedule.end, "every": self.schedule.every},
        }
        return {"masks": stored, "meta": meta}


def plan(run) -> None:
    ignore_rewind(run, "gmp's tickets start from its pruning run or the initial weights")
    trained = run.settings["gmp_ticket"] == "trained"
    masks, meta = run.searched(GradualPruning(run, run.settings["target_sparsities"]).fit)
    names = list(run.model.state_dict())
    for t, entry in enumerate(meta["targets"]):
        target = entry["target_sparsity"]
        start = {k: masks[f"{t}/weights/{k}"] for k in names} if trained else run.init_state()
        run.ticket(TicketSpec(
            target_ticket(run.method, target), round_idx=t + 1, target_sparsity=target,
            masks=target_masks(run, masks, t), start_state=start,
            start_epoch=entry["search_epoch"] if trained else 0,
            hooks=(RowFields({"search_step": entry["search_step"], "search_epoch": entry["search_epoch"],
                              "search_seconds": meta["search_seconds"], "search_epochs": meta["search_epochs"]}),),
        ))


def check(settings: dict) -> None:
    start, end, epochs = settings["gmp_start_epoch"], settings["gmp_end_epoch"], settings["epochs"]
    if start >= end:
        raise ConfigError("gmp_start_epoch", start, f"a number below gmp_end_epoch = {end:g}")
    if settings["gmp_ticket"] == "trained" and end >= epochs:
        raise ConfigError("gmp_end_epoch", end, f"a number below epochs = {epochs} with gmp_ticket trained (its "
                                                f"tickets train on at their target until epochs)")
    if end > epochs:
        raise ConfigError("gmp_end_epoch", end, f"a number up to epochs = {epochs} (the pruning run's length)")


KEYS = (
    number_key("gmp_start_epoch", "t0 in epochs: dense training until then, the first prune there", 0),
    number_key("gmp_end_epoch", "the epoch at which the sparsity reaches the largest target (below epochs with "
               "gmp_ticket trained)", 0, low_open=True),
    number_key("gmp_frequency", "ΔT: optimizer steps between prunes", 1, whole=True),
    choice_key("gmp_schedule", "the sparsity's path from t0 to gmp_end_epoch: cubic (Zhu & Gupta: fast first, "
               "slow near the end), linear or cosine", PRUNING_SHAPES),
    choice_key("gmp_ticket", "trained: each target's pruned model trained on at it (GMP proper); rewind: its "
               "mask rewound to the initial weights and retrained (the lottery variant)", TICKETS),
)

METHOD = Method(
    "gmp", "gradual magnitude pruning during one dense training (Zhu & Gupta 2017): every ΔT steps the "
    "smallest |w| are pruned along a cubic schedule, recording a mask at each target; its ticket is the pruned "
    "model trained on, or the mask rewound to the initial weights and retrained", plan, keys=KEYS, check=check,
)
