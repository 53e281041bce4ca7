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
from time import perf_counter

import torch
from torch import nn
from torch.nn.utils import parametrize

from recbole_lth import builder, checkpoint, paths
from recbole_lth.engine import TicketHook
from recbole_lth.masking import table_axes
from recbole_lth.methods.base import Method
from recbole_lth.pruning import keep_top, kept_count
from recbole_lth.settings import choice_key, number_key
from recbole_lth.trainer import invalidate_caches

logger = logging.getLogger("recbole_lth")

GRANULARITIES = ("global", "dimension", "feature", "feature_dimension")


class SoftThreshold(nn.Module):
    """``v -> sign(v) · relu(|v| - sigmoid(s))`` with a learnable ``s`` that
    broadcasts over ``v`` (PEP Eq. 8, g = sigmoid)."""

    def __init__(self, shape, init: float, device=None):
        super().__init__()
        self.s = nn.Parameter(torch.full(tuple(shape), float(init), device=device))

    def threshold(self) -> torch.Tensor:
        return torch.sigmoid(self.s)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sign(v) * torch.relu(v.abs() - self.threshold())


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


class _StopSearch(Exception):
    """Raised from the step hook once every target has been recorded."""


class PepSearch:
    """Soft-threshold search on a copy of ``run.model``; records one margin
    snapshot per (target, tensor group) the first time the target is reached."""

    def __init__(self, run, targets: list[float]):
        settings = run.settings
        self.run = run
        self.targets = list(targets)
        self.model = copy.deepcopy(run.model)
        self.model.load_state_dict(run.init_state())
        invalidate_caches(self.model)
        device = run.device
        self.thresholds: dict[str, SoftThreshold] = {}
        self.originals: dict[str, torch.Tensor] = {}
        axes = table_axes(self.model, list(run.prunable))
        for name in run.prunable:
            module_name, tensor_name = name.rsplit(".", 1)
            module = self.model.get_submodule(module_name)
            weight = getattr(module, tensor_name)
            # "feature" = one user's or item's vector: a row, or an input layer's column.
            axis = axes[name][1] if axes[name] else 0
            shape = threshold_shape(weight.shape, settings["pep_granularity"], axis)
            soft = SoftThreshold(shape, settings["pep_init"], device=weight.device)
            parametrize.register_parametrization(module, tensor_name, soft)
            self.thresholds[name] = soft
            self.originals[name] = module.parametrizations[tensor_name].original
        # Tensor groups whose sparsity is compared with the targets: all
        # selected tensors together (global scope) or each on its own.
        names = list(run.prunable)
        self.groups = [names] if run.scope == "global" else [[n] for n in names]
        # A target is reached when a group's nonzero count is at most the
        # count its ticket keeps (integer comparison, exact).
        self.keep = torch.tensor(
            [[kept_count(sum(self.originals[n].numel() for n in group), t) for t in self.targets]
             for group in self.groups],
            device=device, dtype=torch.long,
        )
        shape = self.keep.shape
        self.recorded = torch.zeros(shape, dtype=torch.bool, device=device)
        self.step_at = torch.full(shape, -1, dtype=torch.long, device=device)
        self.nonzero_at = torch.full(shape, -1, dtype=torch.long, device=device)
        self.margins = [
            {n: torch.zeros_like(self.originals[n], dtype=torch.float32) for n in names} for _ in self.targets
        ]
        self.step = 0
        self.step_tensor = torch.zeros((), dtype=torch.long, device=device)
        self.steps_per_epoch = max(1, len(run.train_data))

    @torch.no_grad()
    def margin(self, name: str) -> torch.Tensor:
        """``|V| - sigmoid(s)``: positive exactly where Ṽ is nonzero."""
        return self.originals[name].abs() - self.thresholds[name].threshold()

    @torch.no_grad()
    def record(self) -> None:
        """Device-only bookkeeping after a step (or before the first one)."""
        margins = {n: self.margin(n) for group in self.groups for n in group}
        for g, group in enumerate(self.groups):
            nonzero = sum((margins[n] > 0).sum() for n in group)
            newly = (nonzero <= self.keep[g]) & ~self.recorded[g]
            self.recorded[g] |= newly
            self.step_at[g] = torch.where(newly, self.step_tensor, self.step_at[g])
            self.nonzero_at[g] = torch.where(newly, nonzero, self.nonzero_at[g])
            for t in range(len(self.targets)):
                for n in group:
                    self.margins[t][n].copy_(torch.where(newly[t], margins[n], self.margins[t][n]))

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.step += 1
        self.step_tensor += 1
        self.record()
        # One host sync per epoch: stop once every target is recorded.
        if self.step % self.steps_per_epoch == 0 and bool(self.recorded.all()):
            raise _StopSearch

    def optimizer_groups(self) -> list[dict]:
        """Model weights as RecBole sets them; the thresholds with their own
        learning rate and L2 (the force that raises them, as in PEP's code
        where Adam's weight decay also applies to s)."""
        settings, config = self.run.settings, self.run.config
        threshold_ids = {id(t.s) for t in self.thresholds.values()}
        weights = [p for p in self.model.parameters() if id(p) not in threshold_ids]
        lr = settings.get("pep_lr")
        return [
            {"params": weights},
            {
                "params": [t.s for t in self.thresholds.values()],
                "lr": config["learning_rate"] if lr is None else lr,
                "weight_decay": settings["pep_weight_decay"],
            },
        ]

    def fit(self) -> dict:
        """Run the search; return the recorded masks and the search's costs."""
        from recbole.utils import get_trainer

        run, config = self.run, self.run.config
        builder.seed(config)
        run.train_data.generator.manual_seed(config["seed"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, self.model)
        trainer.optimizer = trainer._build_optimizer(params=self.optimizer_groups())
        handle = trainer.optimizer.register_step_post_hook(self._after_step)
        self.record()  # a target already met by the initial thresholds is recorded at step 0
        started = perf_counter()
        stopped_early = False
        try:
            trainer.fit(run.train_data, None, verbose=True, saved=False, show_progress=bool(config["show_progress"]))
        except _StopSearch:
            stopped_early = True
        finally:
            handle.remove()
            writer = getattr(trainer, "tensorboard", None)
            if writer is not None and hasattr(writer, "close"):
                writer.close()
        seconds = perf_counter() - started
        return self._result(seconds, stopped_early)

    def _result(self, seconds: float, stopped_early: bool) -> dict:
        scope, names = self.run.scope, list(self.run.prunable)
        recorded = self.recorded.all(dim=0).cpu().tolist()
        step_at = self.step_at.max(dim=0).values.cpu().tolist()
        nonzero_at = self.nonzero_at.clamp(min=0).sum(dim=0).cpu().tolist()
        total = sum(self.originals[n].numel() for n in names)
        masks, targets = {}, []  # masks: "<target index>/<tensor name>" -> bool mask
        for t, target in enumerate(self.targets):
            entry = {"target_sparsity": target, "reached": bool(recorded[t])}
            if recorded[t]:
                eligible = {n: torch.ones_like(m, dtype=torch.bool) for n, m in self.margins[t].items()}
                mask = keep_top(self.margins[t], eligible, target, scope)
                masks.update({f"{t}/{n}": m for n, m in mask.items()})
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
                "final_sparsity": {n: round(v, 6) for n, v in final.items()},
            },
        }


class PepRowFields(TicketHook):
    """Adds the search's crossing point and cost to a ticket's results row."""

    def __init__(self, entry: dict, meta: dict):
        self.fields = {
            "pep_sparsity": entry["pep_sparsity"],
            "search_step": entry["search_step"],
            "search_epoch": entry["search_epoch"],
            "search_seconds": meta["search_seconds"],
            "search_epochs": meta["search_epochs"],
        }

    def row_fields(self) -> dict:
        return dict(self.fields)


def search_masks(run, targets) -> tuple[dict, dict]:
    """The search's result, from the run directory if a previous run saved it."""
    path = run.paths.search_state("pep")
    if path.exists():
        logger.info(f"pep: search already done, loaded from {path}")
        stored = checkpoint.load(path)
        return stored["masks"], stored["meta"]
    logger.info(
        f"pep: searching thresholds ({run.settings['pep_granularity']}, init {run.settings['pep_init']}) "
        f"for sparsities {targets}, at most {run.config['epochs']} epochs"
    )
    result = PepSearch(run, targets).fit()
    checkpoint.save(path, masks=result["masks"], meta=result["meta"])
    paths.write_json(run.paths.search_summary("pep"), result["meta"])
    logger.info(f"pep: search done: {result['meta']}")
    return result["masks"], result["meta"]


def plan(run) -> None:
    targets = list(run.settings["target_sparsities"])
    masks, meta = search_masks(run, targets)
    for t, entry in enumerate(meta["targets"]):
        target = entry["target_sparsity"]
        key = paths.target_ticket("pep", target)
        if not entry["reached"]:
            note = (
                f"not reached: the search ended after {meta['search_epochs']} epochs at sparsity "
                f"{meta['final_sparsity']}; raise epochs, pep_lr or pep_init"
            )
            logger.warning(f"pep: target sparsity {target} {note}; no ticket trained")
            run.add_row({
                **run.row_start(key, t + 1, target),
                "search_seconds": meta["search_seconds"], "search_epochs": meta["search_epochs"], "note": note,
            })
            continue
        mask = {n: masks[f"{t}/{n}"].to(run.device) for n in run.prunable}
        run.ticket(
            key, round_idx=t + 1, target_sparsity=target, masks=mask, start_state=run.init_state(),
            hooks=(PepRowFields(entry, meta),),
        )


KEYS = (
    choice_key("pep_granularity", "the shape of s: one per tensor, per dimension, per user/item, per entry",
               GRANULARITIES),
    number_key("pep_init", "initial s: threshold sigmoid(s)"),
    number_key("pep_lr", "learning rate of s (null: learning_rate)", 0, low_open=True, nullable=True),
    number_key("pep_weight_decay", "L2 on s: what raises the thresholds (PEP's code: Adam's weight decay on s)", 0),
)

METHOD = Method(
    "pep", "one soft-threshold search (learnable s, PEP Eq. 8) records a mask when each target is first reached; "
    "each mask is rewound to the initial weights and retrained (PEP §4.2)", plan, keys=KEYS,
)
