"""The training lifecycle methods get from the trainer adapter (engine/trainer.py's TrainingHook)."""
from __future__ import annotations

import pytest

from recbole_lth.api import prepare
from recbole_lth.engine.run import TicketHook, TicketSpec
from recbole_lth.engine.trainer import sparse_trainer, train
from recbole_lth.core.masking import ParameterMask

from conftest import QUICK
from test_dsl import WorseEveryEvaluation as Worse  # validation that only gets worse


class Gate(TicketHook):
    def __init__(self, select_from=0, count_from=0):
        self.select_from, self.count_from, self.scores = select_from, count_from, []

    def selectable(self, trainer, epoch_idx):
        return epoch_idx >= self.select_from

    def patience_counts(self, trainer, epoch_idx):
        return epoch_idx >= self.count_from

    def validated(self, trainer, epoch_idx, score):
        self.scores.append((epoch_idx, score))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    return prepare(model="BPR", dataset="ml-100k", method="rp", config_dict={
        **QUICK, "epochs": 4, "stopping_step": 0, "target_sparsities": [0.5], "output_root": str(root)})


def _ticket(run, key, *hooks):
    return run.ticket(TicketSpec(key, 1, 0.0, run.full_masks(), run.init_state(), hooks=(Worse(), *hooks))).row


def test_an_epoch_a_hook_rules_out_is_never_selected(run):
    assert _ticket(run, "plain")["best_epoch"] == 0  # every later validation is worse
    gate = Gate(select_from=1, count_from=4)
    row = _ticket(run, "late", gate)
    # Epoch 0 is validated (and reported to validated()) but cannot win: the best is epoch 1.
    assert [e for e, _ in gate.scores] == [0, 1, 2, 3] and row["best_epoch"] == 1
    assert row["valid_recall@20"] == pytest.approx(gate.scores[1][1], abs=1e-9)  # validated() sees RecBole's score


def test_early_stopping_counts_only_once_every_hook_lets_it(run):
    assert _ticket(run, "stops")["epochs_trained"] == 2  # stopping_step 0: the second evaluation stops it
    # Held through epoch 1 (no stop however bad), counted afresh from epoch 2: its evaluation stops it.
    assert _ticket(run, "held", Gate(count_from=2))["epochs_trained"] == 3
    assert _ticket(run, "held3", Gate(count_from=3))["epochs_trained"] == 4


class StopAt(TicketHook):
    def __init__(self, step=None, epoch=None):
        self.stop_step, self.stop_epoch, self.steps, self.epochs = step, epoch, 0, []

    def after_step(self, trainer):
        self.steps += 1
        return self.steps == self.stop_step

    def epoch_end(self, trainer, epoch_idx):
        self.epochs.append(epoch_idx)
        return epoch_idx == self.stop_epoch


@pytest.mark.parametrize("stop, steps, epochs", [({"step": 7}, 7, []), ({"epoch": 1}, None, [0, 1]), ({}, None, [0, 1, 2, 3])])
def test_a_hook_stops_after_a_step_or_an_epoch(run, stop, steps, epochs):
    run.restart(run.init_state())
    hook = StopAt(**stop)
    trainer = sparse_trainer(run.config, run.model, ParameterMask(run.prunable), hooks=(hook,))
    try:
        stopped = train(trainer, run.train_data)
    finally:
        trainer.close()
    assert stopped == bool(stop) and hook.epochs == epochs
    assert hook.steps == (steps if steps is not None else len(epochs) * len(run.train_data))
