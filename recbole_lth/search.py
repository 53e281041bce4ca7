"""The ticket loop: methods as short plans over one ``Run``.

A method (``METHODS``) is a function of a :class:`Run` that asks for tickets
in order: ``run.ticket(key, masks=..., start_state=...)``.  ``Run.ticket``
trains one ticket through RecBole (selection on validation, test at the best
validation epoch) and stores it; a ticket already stored in the run
directory is loaded instead of trained, so re-running a command resumes after
the last finished ticket and replays the same masks.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import torch
from recbole.utils import init_seed

from recbole_lth import checkpoint, pruning
from recbole_lth.errors import TrainingDiverged
from recbole_lth.masking import ParameterMask, full_masks
from recbole_lth.trainer import invalidate_caches, sparse_trainer

logger = logging.getLogger("recbole_lth")


def _plain(value):
    """Metric values come back as numpy scalars; results hold plain floats."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class TicketHook:
    """Extends how one ticket trains, without touching RecBole's loop.

    ``attach`` runs after the trainer is built (mask attached, optimizer
    fresh) and before ``fit``: a hook may add ``trainer.mask.grad_observers``
    (DSL), wrap ``trainer.loss_func`` (distillation) or add
    ``trainer.epoch_callbacks``.  ``row_fields`` adds columns to the ticket's
    results row once training is done.
    """

    def attach(self, run: "Run", trainer) -> None:
        pass

    def row_fields(self) -> dict:
        return {}


def _metrics_text(result) -> str:
    return ", ".join(f"{k}={_plain(v):.4f}" for k, v in (result or {}).items())


@dataclass
class Ticket:
    key: str
    row: dict
    state_dict: dict  # best-on-validation weights (CPU)
    masks: dict  # bool masks over the prunable tensors (CPU)

    def prunable_weights(self, names, device) -> dict:
        return {n: self.state_dict[n].to(device) for n in names}

    def device_masks(self, device) -> dict:
        return {n: m.to(device) for n, m in self.masks.items()}


@dataclass
class Run:
    """One search: settings, RecBole data and model, and the run directory."""

    settings: dict
    config: object  # recbole.config.Config
    train_data: object
    valid_data: object
    test_data: object
    model: torch.nn.Module
    run_dir: Path
    prunable: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    # TicketHooks attached to every ticket of the run (e.g. distillation).
    ticket_hooks: list = field(default_factory=list)

    # ------------------------------------------------------------- states
    @property
    def device(self):
        return self.config["device"]

    @property
    def scope(self) -> str:
        return self.settings["prune_scope"]

    def full_masks(self) -> dict:
        return full_masks(self.prunable)

    def init_state(self) -> dict:
        """The model's initial weights, saved once and reloaded (never re-seeded)."""
        path = self.run_dir / "init_state.pt"
        if not path.exists():
            checkpoint.save(path, state_dict=self.model.state_dict(), meta={"epoch": 0})
        return checkpoint.load(path)["state_dict"]

    def rewind_state(self) -> dict:
        """Weights survivors are rewound to: initial, or after ``rewind_epoch``."""
        if self.settings["rewind_epoch"] == 0:
            return self.init_state()
        path = self.run_dir / "rewind_state.pt"
        if not path.exists():
            raise TrainingDiverged(
                f"rewind_epoch={self.settings['rewind_epoch']}: the dense round stopped (early stopping) "
                f"before that epoch, so there is no state to rewind to; use a smaller rewind_epoch "
                f"or a larger stopping_step. Finished tickets are kept in {self.run_dir}"
            )
        return checkpoint.load(path)["state_dict"]

    def _capture_rewind(self, trainer, epoch_idx) -> None:
        if epoch_idx + 1 == self.settings["rewind_epoch"]:
            checkpoint.save(
                self.run_dir / "rewind_state.pt",
                state_dict=self.model.state_dict(),
                meta={"epoch": epoch_idx + 1},
            )

    # ------------------------------------------------------------ tickets
    def ticket(
        self,
        key: str,
        *,
        round_idx: int,
        target_sparsity: float,
        masks: dict,
        start_state: dict,
        start_epoch: int = 0,
        capture_rewind: bool = False,
        note: str = "",
        hooks: tuple = (),
    ) -> Ticket:
        folder = self.run_dir / "tickets" / key
        if (folder / "result.json").exists():
            stored = checkpoint.load(folder / "ticket.pt")
            row = checkpoint.read_json(folder / "result.json")
            logger.info(f"ticket {key}: already finished in {folder}, skipped")
            ticket = Ticket(key, row, stored["state_dict"], stored["masks"])
        else:
            ticket = self._train(
                key, round_idx, target_sparsity, masks, start_state, start_epoch, capture_rewind, note,
                list(self.ticket_hooks) + list(hooks),
            )
            checkpoint.save(folder / "ticket.pt", state_dict=ticket.state_dict, masks=ticket.masks, meta={"key": key})
            checkpoint.write_json(folder / "result.json", ticket.row)
        self.rows.append(ticket.row)
        self.write_results()
        return ticket

    def _train(self, key, round_idx, target_sparsity, masks, start_state, start_epoch, capture_rewind, note, hooks):
        config = self.config
        # Every ticket sees the same seed and the same data order, so a ticket
        # is a function of (start state, mask, settings) and resuming replays it.
        init_seed(config["seed"], config["reproducibility"])
        self.train_data.generator.manual_seed(config["seed"])
        self.model.load_state_dict(start_state)
        mask = ParameterMask(self.prunable, {n: m.to(self.device) for n, m in masks.items()})
        invalidate_caches(self.model)
        callbacks = [self._capture_rewind] if capture_rewind else []
        trainer = sparse_trainer(config, self.model, mask, callbacks)
        trainer.start_epoch = start_epoch
        for hook in hooks:
            hook.attach(self, trainer)
        logger.info(
            f"ticket {key}: round {round_idx}, target sparsity {target_sparsity:.4f}, "
            f"sparsity {mask.report().sparsity:.4f}, start epoch {start_epoch}"
        )
        started = perf_counter()
        try:
            trainer.fit(
                self.train_data, self.valid_data, verbose=True, saved=True,
                show_progress=bool(config["show_progress"]),
            )
        except ValueError as err:
            if "nan" not in str(err).lower():
                raise
            epoch = start_epoch if trainer.last_epoch is None else trainer.last_epoch + 1
            raise TrainingDiverged(
                f"ticket {key} (round {round_idx}): the training loss became NaN in epoch {epoch}. "
                f"Finished tickets are kept in {self.run_dir} and a re-run resumes after them; "
                f"try a smaller learning_rate (now {config['learning_rate']})."
            ) from err
        finally:
            trainer.close()
        seconds = perf_counter() - started
        trainer.load_best()
        test_result = trainer.evaluate(self.test_data, load_best_model=False, show_progress=False)
        report = mask.report()
        row = {
            "method": self.settings["method"],
            "model": config["model"],
            "dataset": config["dataset"],
            "ticket": key,
            "round": round_idx,
            "target_sparsity": round(float(target_sparsity), 6),
            "sparsity": round(report.sparsity, 6),
            **{f"sparsity[{n}]": round(s, 6) for n, s in report.table_sparsity().items()},
            "prunable_params": report.total,
            "active_params": report.total_active,
            "nonzero_params": report.total_nonzero,
            "best_epoch": trainer.best_epoch,
            "epochs_trained": (trainer.last_epoch + 1 - start_epoch) if trainer.last_epoch is not None else 0,
            **{f"valid_{k}": _plain(v) for k, v in (trainer.best_valid_result or {}).items()},
            **{f"test_{k}": _plain(v) for k, v in (test_result or {}).items()},
            "train_seconds": round(seconds, 3),
        }
        for hook in hooks:
            row.update(hook.row_fields())
        row["note"] = note
        logger.info(
            f"ticket {key}: sparsity {row['sparsity']:.4f}, best epoch {row['best_epoch']}, "
            f"valid {_metrics_text(trainer.best_valid_result)}, test {_metrics_text(test_result)}"
        )
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return Ticket(key, row, state, mask.cpu_masks())

    def write_results(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [c for c in row if c not in columns]
        path = self.run_dir / "results.csv"
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)


# ------------------------------------------------------------------ methods
def planned_rounds(settings: dict) -> int:
    limits = []
    if settings.get("rounds") is not None:
        limits.append(settings["rounds"])
    if settings.get("target_sparsity") is not None:
        limits.append(pruning.imp_rounds_to(settings["prune_rate"], settings["target_sparsity"]))
    return min(limits) if limits else 0


def dense(run: Run) -> None:
    run.ticket("dense", round_idx=0, target_sparsity=0.0, masks=run.full_masks(), start_state=run.init_state())


def _iterative(run: Run, rewind: bool) -> None:
    """IMP (rewind=True) and WR (rewind=False): round 0 is the dense model."""
    settings, names = run.settings, list(run.prunable)
    rewind_epoch = settings["rewind_epoch"] if rewind else 0
    previous = run.ticket(
        "round_00", round_idx=0, target_sparsity=0.0, masks=run.full_masks(),
        start_state=run.init_state(), capture_rewind=rewind_epoch > 0,
    )
    for r in range(1, planned_rounds(settings) + 1):
        sparsity = pruning.imp_sparsity(settings["prune_rate"], r)
        # Prune the best-on-validation weights of the previous round (the
        # model we report), never reviving an already pruned weight.
        masks = pruning.magnitude_prune(
            previous.prunable_weights(names, run.device), previous.device_masks(run.device), sparsity, run.scope
        )
        start = run.rewind_state() if rewind else previous.state_dict
        previous = run.ticket(
            f"round_{r:02d}", round_idx=r, target_sparsity=sparsity, masks=masks,
            start_state=start, start_epoch=rewind_epoch,
        )


def imp(run: Run) -> None:
    _iterative(run, rewind=True)


def wr(run: Run) -> None:
    _iterative(run, rewind=False)


def omp(run: Run) -> None:
    rewind_epoch = run.settings["rewind_epoch"]
    trained = run.ticket(
        "dense", round_idx=0, target_sparsity=0.0, masks=run.full_masks(),
        start_state=run.init_state(), capture_rewind=rewind_epoch > 0,
    )
    weights = trained.prunable_weights(list(run.prunable), run.device)
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        masks = pruning.magnitude_prune(weights, run.full_masks(), sparsity, run.scope)
        run.ticket(
            f"omp_{sparsity:.4f}", round_idx=i, target_sparsity=sparsity, masks=masks,
            start_state=run.rewind_state(), start_epoch=rewind_epoch,
        )


def rp(run: Run) -> None:
    if run.settings["rewind_epoch"]:
        logger.warning("rp draws random masks over the initial weights; rewind_epoch is ignored")
    for i, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        masks = pruning.random_mask(run.prunable, sparsity, run.scope, seed=run.config["seed"] + i)
        run.ticket(
            f"rp_{sparsity:.4f}", round_idx=i, target_sparsity=sparsity, masks=masks,
            start_state=run.init_state(),
        )

