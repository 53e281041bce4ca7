"""EB: early-bird lottery tickets, IMP's search at a fraction of its cost.

IMP trains every round to convergence only to rank the survivors by |w|.
You et al. (ICLR 2020, "Drawing early-bird tickets") observed that this
ranking settles long before training ends.  The search here is IMP's loop
with each round cut short when it has:

1. *Search.*  Round r trains the current mask from the saved initial weights
   (same seed, same data order, no validation) and after every epoch computes
   the mask the round's prune would give (the next sparsity on IMP's grid,
   1-(1-p)^r).  The round stops once that mask has changed, between
   consecutive epochs, by less than ``eb_epsilon`` of the weights it prunes,
   ``eb_window`` epochs running (or after ``eb_max_epochs``, at most
   ``epochs``); its weights
   are then pruned as IMP prunes them (never reviving one).  Every target of
   ``target_sparsities`` gets the mask pruned to it exactly from the round
   whose grid interval holds it.
2. *Tickets.*  Each target's mask is rewound to the initial weights and
   trained by ``Run.ticket`` like any other: early stopping and model
   selection on validation, test once.

The masks and the search's costs are saved once (``search/eb.pt``,
``search/eb.json``), so a re-run resumes without searching again.
"""
from __future__ import annotations

import logging
from time import perf_counter

import torch

from recbole_lth.core import paths, pruning
from recbole_lth.core.errors import search_diverges
from recbole_lth.core.masking import ParameterMask
from recbole_lth.core.settings import number_key
from recbole_lth.engine.run import RowFields, TicketSpec
from recbole_lth.engine.trainer import TrainingHook, sparse_trainer, train
from recbole_lth.methods.base import Method, ignore_rewind, stored_masks, target_masks

logger = logging.getLogger("recbole_lth")


def grid(prune_rate: float, targets: list[float]) -> list[float]:
    """The search's sparsities: IMP's rounds until the first at or above the
    largest target (a target that is a grid point is reached exactly)."""
    points, r = [], 1
    while not points or points[-1] < max(targets) - 1e-9:
        points.append(pruning.imp_sparsity(prune_rate, r))
        r += 1
    return points


def mask_change(previous: dict, current: dict, survivors: dict) -> torch.Tensor:
    """The fraction of the round's pruned weights that differ between two
    candidate masks (both prune the same count from ``survivors``); a
    0-dim tensor on the masks' device."""
    changed = sum((previous[n] != current[n]).sum() for n in current)
    pruned = sum((survivors[n] & ~current[n]).sum() for n in current)
    return changed / (2 * pruned.clamp(min=1))


class _Settling(TrainingHook):
    """A search round's epoch ends: the change of the round's prune since the
    last epoch (one sync per epoch); stops once it settles, or at the search's
    epoch limit."""

    def __init__(self, search: "EarlyBirdSearch", masks: dict, point: float):
        self.search, self.masks, self.point = search, masks, point
        self.changes, self.previous, self.epochs = [], None, 0

    def epoch_end(self, trainer, epoch_idx) -> bool:
        self.epochs = epoch_idx + 1
        current = self.search.candidate(self.masks, self.point)
        if self.previous is not None:
            self.changes.append(float(mask_change(self.previous, current, self.masks)))
        self.previous = current
        window, epsilon = self.search.window, self.search.epsilon
        settled = len(self.changes) >= window and max(self.changes[-window:]) < epsilon
        return settled or self.epochs >= self.search.max_epochs


class EarlyBirdSearch:
    def __init__(self, run, targets: list[float]):
        self.run, self.targets = run, sorted(targets)
        settings = run.settings
        self.epsilon, self.window = settings["eb_epsilon"], int(settings["eb_window"])
        self.max_epochs = int(min(settings["eb_max_epochs"], run.config["epochs"]))
        self.points = grid(settings["prune_rate"], self.targets)

    def candidate(self, masks: dict, sparsity: float) -> dict:
        weights = {n: p.detach() for n, p in self.run.prunable.items()}
        return pruning.magnitude_prune(weights, masks, sparsity, self.run.scope)

    def round(self, r: int, masks: dict) -> tuple[int, list[float]]:
        """Train round ``r`` (mask ``masks``) until its prune settles; returns
        the epochs trained and the change after each epoch."""
        run, config = self.run, self.run.config
        run.restart(run.init_state())
        mask = ParameterMask(run.prunable, masks)
        settling = _Settling(self, masks, self.points[r])
        trainer = sparse_trainer(config, run.model, mask, (), run.paths.tensorboard / f"{run.method}_search",
                                 hooks=(settling,))
        try:
            with search_diverges("eb's search", lambda: f"round {r}", run.run_dir,
                                 f"learning_rate (now {config['learning_rate']})"):
                train(trainer, run.train_data, None, show_progress=bool(config["show_progress"]))
        finally:
            trainer.close()
        mask.apply()
        return settling.epochs, settling.changes

    def fit(self) -> dict:
        run = self.run
        started = perf_counter()
        masks = {n: m.to(run.device) for n, m in run.full_masks().items()}
        found, rounds, low = {}, [], 0.0
        for r, point in enumerate(self.points):
            epochs, changes = self.round(r, masks)
            for t, target in enumerate(self.targets):
                if low < target <= point + 1e-9:
                    found[t] = self.candidate(masks, target)
            masks = self.candidate(masks, point)
            rounds.append({"round": r, "sparsity_trained": round(low, 6), "prunes_to": round(point, 6),
                           "epochs": epochs, "mask_change": [round(c, 4) for c in changes],
                           "seconds": round(perf_counter() - started, 3)})
            logger.info(f"eb: round {r} at sparsity {low:.4f}: {epochs} epochs, mask change {rounds[-1]['mask_change']}")
            low = point
        meta = {
            "targets": [{"target_sparsity": t, "search_rounds": next(r for r, p in enumerate(self.points)
                                                                     if t <= p + 1e-9) + 1}
                        for t in self.targets],
            "rounds": rounds,
            "search_epochs": sum(r["epochs"] for r in rounds),
            "search_seconds": round(perf_counter() - started, 3),
            "epsilon": self.epsilon, "window": self.window,
        }
        stored = {k: m for t, masks_t in found.items() for k, m in stored_masks(t, masks_t).items()}
        return {"masks": stored, "meta": meta}


def plan(run) -> None:
    ignore_rewind(run, "eb rewinds its search rounds and tickets to the initial weights")
    targets = sorted(run.settings["target_sparsities"])
    masks, meta = run.searched(EarlyBirdSearch(run, targets).fit)
    for t, entry in enumerate(meta["targets"]):
        target = entry["target_sparsity"]
        run.ticket(TicketSpec(
            paths.target_ticket(run.method, target), round_idx=t + 1, target_sparsity=target,
            masks=target_masks(run, masks, t), start_state=run.init_state(),
            # The search's cost, on every ticket's row (the search is shared).
            hooks=(RowFields({"search_rounds": entry["search_rounds"], "search_epochs": meta["search_epochs"],
                              "search_seconds": meta["search_seconds"]}),),
        ))


KEYS = (
    number_key("eb_epsilon", "a search round stops when its prune's mask changes, epoch to epoch, by less than "
               "this fraction of the weights it prunes (You et al.: 0.1)", 0, 1, low_open=True),
    number_key("eb_window", "... for this many consecutive epochs", 1, whole=True),
    number_key("eb_max_epochs", "the most epochs a search round trains", 1, whole=True),
)

METHOD = Method(
    "eb", "early-bird lottery tickets: IMP's prune-rewind rounds, each cut short when its mask stops changing "
    "(You et al., ICLR 2020); each target's mask is rewound and trained once", plan, keys=KEYS,
)
