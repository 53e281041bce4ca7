"""The shared engine: a :class:`Run` trains :class:`Ticket` s; methods are plans over it.

A method (``recbole_lth.methods``) is a function of a :class:`Run` that asks
for tickets in order: ``run.ticket(TicketSpec(key, round_idx, target_sparsity,
masks, start_state))``.  ``Run.ticket`` trains one ticket through RecBole (selection on validation,
test at the best validation epoch) and stores it; a ticket already stored in
the run directory is loaded instead of trained, so re-running a command
resumes after the last finished ticket and replays the same masks.

Nothing here knows a method: hooks (:class:`TicketHook`) extend how a
ticket trains (distillation, DSL's exploration, extra columns).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Callable

import torch

from recbole_lth.core import checkpoint, paths, pruning, tasks
from recbole_lth.core.errors import ConfigError, RunDamaged, TrainingDiverged, is_nan_loss
from recbole_lth.core.masking import ParameterMask, full_masks
from recbole_lth.engine import builder, distributed, parallel
from recbole_lth.engine import results
from recbole_lth.engine.results import plain, write_results
from recbole_lth.engine.trainer import TrainingHook, invalidate_caches, sparse_trainer, train

logger = logging.getLogger("recbole_lth")


class TicketHook(TrainingHook):
    """Extends how one ticket trains, without touching RecBole's loop.

    It has the training lifecycle of :class:`~recbole_lth.engine.trainer.TrainingHook`
    (after each step, at each epoch's end, whether early stopping may count
    yet, whether an epoch may be selected, each validation's score; DSL's
    exploration holds the patience until its mask freezes).  ``attach`` runs
    after the trainer is built (mask attached, optimizer fresh) and before
    training: a hook may add ``trainer.mask.grad_observers`` (DSL) or wrap
    ``trainer.loss_func`` through ``trainer.use_loss`` (distillation).  ``row_fields`` adds columns to the
    ticket's results row once training is done.  ``diverged_hint`` names what
    the hook adds to the loss, for the message when the loss becomes NaN.
    """

    def attach(self, run: "Run", trainer) -> None:
        pass

    def row_fields(self) -> dict:
        return {}

    def diverged_hint(self) -> str:
        return ""


class RowFields(TicketHook):
    """Fixed columns on a ticket's row (a shared search's cost and where it recorded the ticket's mask)."""

    def __init__(self, fields: dict):
        self.fields = dict(fields)

    def row_fields(self) -> dict:
        return dict(self.fields)


def _metrics_text(result) -> str:
    return ", ".join(f"{k}={plain(v):.4f}" for k, v in (result or {}).items())


@dataclass(frozen=True)
class TicketSpec:
    """What one ticket is, before it trains: everything :meth:`Run.ticket` needs.

    ``key`` names it in the run directory; ``round_idx`` and
    ``target_sparsity`` label its row; it trains ``masks`` from
    ``start_state`` (from epoch ``start_epoch``: a rewound ticket counts its
    rewind epochs).  ``capture_rewind``: save the weights after
    ``rewind_epoch`` (the dense ticket).  ``note`` ends its row; ``hooks``
    (:class:`TicketHook`) extend its training after the run's own;
    ``method`` labels its row (default: the run's method; the shared dense
    ticket: dense); ``weight_decay`` replaces RecBole's for this ticket only.
    """

    key: str
    round_idx: int
    target_sparsity: float
    masks: dict
    start_state: dict
    start_epoch: int = 0
    capture_rewind: bool = False
    note: str = ""
    hooks: tuple = ()
    method: str | None = None
    weight_decay: float | None = None


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
    paths: paths.RunPaths
    prunable: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    # TicketHooks attached to every ticket of the run (e.g. distillation).
    ticket_hooks: list = field(default_factory=list)
    # A study's per-method settings (overall < the method's properties < the user's).
    views: dict = field(default_factory=dict)
    # Called with (row, trained) once per new row: progress output, TensorBoard.
    on_row: Callable | None = None
    # A worker of a parallel run (parallel.py): it trains only the tickets it
    # claims and writes no results.csv (the driver does, once, in plan order).
    claims: parallel.Claims | None = None
    # How the dense ticket is made (``methods.dense.dense_ticket``, set by
    # ``api``: one ticket, or the best of a weight-decay grid); None: one ticket.
    make_dense: Callable[["Run"], Ticket] | None = None
    # The rows results.csv held before this run wrote to it (read at the first row).
    previous_rows: list | None = None

    # ------------------------------------------------------------- states
    @property
    def run_dir(self):
        return self.paths.root

    @property
    def method(self) -> str:
        return self.settings["method"]

    @property
    def device(self):
        return self.config["device"]

    @property
    def scope(self):
        """``prune_scope`` as the pruning functions take it: ``per_field`` with its tables' field rows."""
        if self.settings["prune_scope"] == "per_field":
            return pruning.FieldScope(tasks.field_rows(self.model, list(self.prunable)))
        return self.settings["prune_scope"]

    def full_masks(self) -> dict:
        return full_masks(self.prunable)

    def for_method(self, name: str) -> "Run":
        """The run as one method of a study sees it: that method's settings and
        hooks; the same data, model, run directory, results and dense ticket."""
        return replace(self, settings=self.views.get(name, self.settings), ticket_hooks=[])

    def with_model(self, model, prunable: dict) -> "Run":
        """The same run training another model (a baseline's): same data,
        settings, results and hooks."""
        return replace(self, model=model, prunable=prunable)

    def init_state(self) -> dict:
        """The model's initial weights, saved once and reloaded (never re-seeded)."""
        path = self.paths.init_state
        if not path.exists():
            checkpoint.save(path, state_dict=self.model.state_dict(), meta={"epoch": 0})
        try:
            return checkpoint.load(path)["state_dict"]
        except ValueError as err:
            raise RunDamaged(
                f"{path} cannot be read ({err}): every ticket of this run starts from it, so the run cannot "
                f"go on; start it again in a new run_dir (the finished tickets here stay readable)"
            ) from err

    def saved_init(self, key: str, model) -> dict:
        """A baseline model's initial weights, saved once and reloaded."""
        path = self.paths.baseline_init(key)
        if not path.exists():
            checkpoint.save(path, state_dict=model.state_dict(), meta={"epoch": 0})
        return checkpoint.load(path)["state_dict"]

    def rewind_state(self) -> dict:
        """Weights survivors are rewound to: initial, or after ``rewind_epoch``
        of the dense ticket."""
        if not self.settings.get("rewind_epoch"):
            return self.init_state()
        path = self.paths.rewind_state
        if not path.exists():
            raise TrainingDiverged(
                f"rewind_epoch={self.settings['rewind_epoch']}: the dense ticket stopped (early stopping) "
                f"before that epoch, so there is no state to rewind to; use a smaller rewind_epoch "
                f"or a larger stopping_step. Finished tickets are kept in {self.run_dir}"
            )
        return checkpoint.load(path)["state_dict"]

    def reseed(self) -> None:
        """Every ticket and search starts from the same seed and the same data
        order, so each is a function of (start state, mask, settings): resuming
        replays it, and any worker trains it the same."""
        builder.seed(self.config)
        self.train_data.generator.manual_seed(self.config["seed"])

    def restart(self, state: dict) -> None:
        """:meth:`reseed`, then ``state`` in the run's model, its caches dropped."""
        self.reseed()
        self.model.load_state_dict(state)
        invalidate_caches(self.model)

    def _capture_rewind(self, trainer, epoch_idx) -> None:
        if epoch_idx + 1 == self.settings["rewind_epoch"]:
            checkpoint.save(self.paths.rewind_state, state_dict=self.model.state_dict(),
                            meta={"epoch": epoch_idx + 1})

    def dense_spec(self) -> TicketSpec:
        """The run's one dense ticket: the full masks from the initial weights."""
        return TicketSpec(
            paths.DENSE_TICKET, round_idx=0, target_sparsity=0.0, masks=self.full_masks(),
            start_state=self.init_state(), capture_rewind=bool(self.settings.get("rewind_epoch")),
            method=paths.DENSE_TICKET,
        )

    def dense(self) -> Ticket:
        """The run's dense ticket (trained once): the sparsity-0 row, the
        rewind source and the default teacher of every method; made by
        :attr:`make_dense` when set (``methods/dense.py``'s, which may choose
        it from several), else the one ticket of :meth:`dense_spec`."""
        if self.make_dense is not None:
            return self.make_dense(self)
        return self.ticket(self.dense_spec())

    def searched(self, search: Callable[[], dict]) -> tuple[dict, dict]:
        """A method's search result (``masks``, ``meta``), saved once in
        ``search/<method>.pt`` (+ ``.json``); a re-run loads it instead of
        calling ``search()`` again."""
        path = self.paths.search_state(self.method)
        if not path.exists():
            key = f"search_{self.method}"
            with self.claimed(key) as mine:
                if not mine:
                    raise parallel.TicketPending(key, self.paths.claim(key))
                if not path.exists():  # not finished by another worker meanwhile
                    result = search()
                    checkpoint.save(path, masks=result["masks"], meta=result["meta"])
                    paths.write_json(self.paths.search_summary(self.method), result["meta"])
                    logger.info(f"{self.method}: search done: {result['meta']}")
                    self.count_trained()
                    return result["masks"], result["meta"]
        logger.info(f"{self.method}: search already done, loaded from {path}")
        try:
            stored = checkpoint.load(path)
        except ValueError as err:  # truncated, or not ours
            raise RunDamaged(
                f"the {self.method} search of this run cannot be read ({err}); delete {path} and re-run to search "
                f"again (every finished ticket is kept)"
            ) from err
        return stored["masks"], stored["meta"]

    def claimed(self, key: str):
        """``with run.claimed(key) as mine``: whether this process may train
        ``key`` now (always, unless it is a worker and another has it)."""
        return parallel.no_claims() if self.claims is None else self.claims.claim(key, self.paths.claim(key))

    def count_trained(self) -> None:
        if self.claims is not None:
            self.claims.trained += 1

    # ------------------------------------------------------------ tickets
    def stored(self, key: str) -> Ticket | None:
        """The finished ticket ``key``, or None."""
        if not self.paths.ticket_result(key).exists():
            return None
        try:
            row = paths.read_json(self.paths.ticket_result(key))
            stored = checkpoint.load(self.paths.ticket_weights(key))
        except (ValueError, OSError) as err:  # truncated json or checkpoint, a missing weights file
            raise RunDamaged(
                f"ticket {key} in {self.paths.tickets / key} cannot be read ({err}); delete that folder and "
                f"re-run to train it again (every other finished ticket is kept)"
            ) from err
        return Ticket(key, row, stored["state_dict"], stored["masks"])

    def ticket(self, spec: TicketSpec) -> Ticket:
        """Train (or load, if finished) the ticket ``spec`` describes."""
        key = spec.key
        ticket = self.stored(key)
        trained = ticket is None
        if ticket is not None:
            logger.info(f"ticket {key}: already finished in {self.paths.tickets / key}, skipped")
        else:
            with self.claimed(key) as mine:
                if not mine:  # another worker trains it
                    return parallel.PendingTicket(key, self.paths.claim(key))
                ticket = self.stored(key)  # finished by another worker meanwhile
                trained = ticket is None
                if trained:
                    ticket = self._train_and_store(spec)
        self.add_row(ticket.row, trained)
        return ticket

    def _train_and_store(self, spec: TicketSpec) -> Ticket:
        key = spec.key
        self.refuse_empty(key, spec.masks)
        override = {} if spec.weight_decay is None else {"weight_decay": spec.weight_decay}
        with builder.config_values(self.config, override):
            ticket = self._train(key, spec)
        if spec.weight_decay is not None:  # a column before the note
            note_text = ticket.row.pop("note", "")
            ticket.row.update(weight_decay=float(spec.weight_decay), note=note_text)
        if distributed.active():  # every rank trained this ticket: the same masks, or the run stops
            distributed.check_identical(ticket.masks, f"ticket {key}")
            ticket.row["ranks"] = distributed.world_size()
        self.store(ticket)
        self.count_trained()
        return ticket

    def store(self, ticket: Ticket) -> None:
        """Weights first, the row last: the row marks the ticket finished."""
        checkpoint.save(self.paths.ticket_weights(ticket.key), state_dict=ticket.state_dict, masks=ticket.masks,
                        meta={"key": ticket.key, "model": self.config["model"], "dataset": self.config["dataset"]})
        paths.write_json(self.paths.ticket_result(ticket.key), ticket.row)

    def refuse_empty(self, key: str, masks: dict) -> None:
        """A mask that leaves a table with no active weight trains nothing
        there: such a ticket scores by the order of tied zeros and could be
        called winning.  The planned counts are checked before the run starts
        (``api``); under ``prune_scope: global`` only the mask itself can tell
        whether one table lost every weight, so it is checked here, before
        the ticket trains."""
        empty = [n for n, m in masks.items() if not bool(m.any())]
        if empty:
            raise ConfigError(
                "prune_scope", self.settings["prune_scope"],
                f"per_table, or a lower sparsity: ticket {key} would leave {', '.join(empty)} with no active "
                f"weight (finished tickets are kept)",
            )

    def add_row(self, row: dict, trained: bool = False) -> None:
        """A row of ``results.csv`` (a ticket's, or a note with no ticket); a
        ticket asked for again (the dense ticket, shared) keeps its one row."""
        if self.claims is not None:  # a worker: the driver writes the rows
            return
        same = [i for i, r in enumerate(self.rows) if r.get("ticket") == row.get("ticket")]
        if same:
            self.rows[same[0]] = row
        else:
            self.rows.append(row)
        if self.previous_rows is None:
            self.previous_rows = results.previous_rows(self.run_dir)
        write_results(self.run_dir, results.with_unreached(self.rows, self.previous_rows))
        if not same and self.on_row is not None:
            self.on_row(row, trained)

    def write_rows(self) -> None:
        """``results.csv`` as this run's plan made it, once every method has
        planned: rows of an earlier run the plan no longer makes are gone."""
        if self.claims is None and self.rows:
            write_results(self.run_dir, self.rows)

    def row_start(self, key: str, round_idx: int, target_sparsity: float, method: str | None = None) -> dict:
        """The columns every row begins with."""
        return {
            "method": method or self.method, "model": self.config["model"], "dataset": self.config["dataset"],
            "ticket": key, "round": round_idx, "target_sparsity": round(float(target_sparsity), 6),
        }

    def _train(self, key: str, spec: TicketSpec) -> Ticket:
        """Train ``spec``'s ticket (``key`` is ``spec.key``, first so that a
        test can watch which tickets train)."""
        round_idx, target_sparsity, masks = spec.round_idx, spec.target_sparsity, spec.masks
        start_epoch, note = spec.start_epoch, spec.note
        hooks = list(self.ticket_hooks) + list(spec.hooks)
        method = spec.method or self.method
        config = self.config
        self.restart(spec.start_state)
        mask = ParameterMask(self.prunable, {n: m.to(self.device) for n, m in masks.items()})
        callbacks = [self._capture_rewind] if spec.capture_rewind else []
        trainer = sparse_trainer(config, self.model, mask, callbacks, self.paths.tensorboard / key, hooks=hooks)
        trainer.start_epoch = start_epoch
        for hook in hooks:
            hook.attach(self, trainer)
        logger.info(
            f"ticket {key}: round {round_idx}, target sparsity {target_sparsity:.4f}, "
            f"sparsity {mask.report().sparsity:.4f}, start epoch {start_epoch}"
        )
        started = perf_counter()
        try:
            train(trainer, self.train_data, self.valid_data, show_progress=bool(config["show_progress"]))
        except ValueError as err:
            if not is_nan_loss(err):
                raise
            epoch = start_epoch if trainer.last_epoch is None else trainer.last_epoch + 1
            causes = [f"learning_rate (now {config['learning_rate']})"] + [h.diverged_hint() for h in hooks]
            raise TrainingDiverged(
                f"ticket {key} (round {round_idx}): the training loss became NaN in epoch {epoch}. "
                f"Finished tickets are kept in {self.run_dir} and a re-run resumes after them; "
                f"try a smaller {' or a smaller '.join(c for c in causes if c)}."
            ) from err
        finally:
            trainer.close()
        seconds = perf_counter() - started
        trainer.load_best()
        test_result = trainer.evaluate(self.test_data, load_best_model=False, show_progress=False)
        report = mask.report()
        row = {
            **self.row_start(key, round_idx, target_sparsity, method),
            "sparsity": round(report.sparsity, 6),
            **{f"sparsity[{n}]": round(s, 6) for n, s in report.table_sparsity().items()},
            "prunable_params": report.total,
            "active_params": report.total_active,
            "nonzero_params": report.total_nonzero,
            "best_epoch": trainer.best_epoch,
            "epochs_trained": (trainer.last_epoch + 1 - start_epoch) if trainer.last_epoch is not None else 0,
            **{f"valid_{k}": plain(v) for k, v in (trainer.best_valid_result or {}).items()},
            **{f"test_{k}": plain(v) for k, v in (test_result or {}).items()},
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
