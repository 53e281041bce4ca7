"""GMP: gradual magnitude pruning in one training, one exact mask per target, two kinds of ticket."""
from __future__ import annotations

import pytest
import torch

import recbole_lth
from recbole_lth import methods
from recbole_lth.api import prepare, settings_for
from recbole_lth.cli import main
from recbole_lth.core import checkpoint, paths
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.pruning import kept_count
from recbole_lth.engine.run import TicketHook
from recbole_lth.methods import gmp

from conftest import QUICK

# 20 steps an epoch on ml-100k: prunes every 5 steps from step 0 to step 40 (epoch 2), then one epoch at 0.8.
KEYS = {"epochs": 3, "target_sparsities": [0.5, 0.8], "gmp_start_epoch": 0, "gmp_end_epoch": 2, "gmp_frequency": 5,
        "learning_rate": 0.01}
GMP = {**QUICK, **KEYS}


class StartWeights(TicketHook):
    """Each ticket's weights and start epoch as its training starts (mask applied)."""

    def __init__(self):
        self.starts = []

    def attach(self, run, trainer):
        self.starts.append(({k: v.detach().clone() for k, v in run.model.state_dict().items()}, trainer.start_epoch))


def _plan(tmp_path, monkeypatch, **overrides):
    """Plan a gmp run, with a host-side trace of every prune: (step, sparsity, weights kept)."""
    prunes = []
    prune_to = gmp.GradualPruning._prune_to

    def traced(self, sparsity):
        prune_to(self, sparsity)
        prunes.append((self.step, sparsity, sum(int(m.sum()) for m in self.mask.masks.values())))

    monkeypatch.setattr(gmp.GradualPruning, "_prune_to", traced)
    run = prepare(model="BPR", dataset="ml-100k", method="gmp",
                  config_dict={**GMP, "run_dir": str(tmp_path / "run"), **overrides})
    starts = StartWeights()
    run.ticket_hooks.append(starts)
    methods.get("gmp").plan(run)
    return run, prunes, starts.starts


def test_the_pruning_run_follows_the_schedule_and_records_exact_masks(tmp_path, monkeypatch):
    run, prunes, starts = _plan(tmp_path, monkeypatch)
    total = sum(p.numel() for p in run.prunable.values())
    meta = paths.read_json(run.paths.search_summary("gmp"))
    steps = meta["steps_per_epoch"]
    schedule = gmp.schedule(run.settings, steps)
    assert (schedule.start, schedule.end, schedule.every) == (0, 2 * steps, 5)
    # Every prune keeps the exact count of its sparsity: the schedule's at a ΔT step, or a target on the way.
    for step, sparsity, kept in prunes:
        assert kept == kept_count(total, sparsity) and step % 5 == 0
        assert sparsity == schedule.at(step) or sparsity in (0.5, 0.8)
    assert [s for _, s, _ in prunes] == sorted(s for _, s, _ in prunes)
    # 0.5 is passed on the way (the cubic reaches it early), 0.8 exactly at the end step, where the run stops.
    first = next(step for step in range(0, 2 * steps + 1, 5) if schedule.at(step) >= 0.5)
    assert [t["search_step"] for t in meta["targets"]] == [first, 2 * steps]
    assert meta["search_steps"] == 2 * steps and meta["prunes"] == len(prunes)

    stored = checkpoint.load(run.paths.search_state("gmp"))["masks"]
    for t, (target, row) in enumerate(zip((0.5, 0.8), run.rows)):
        mask = {n: stored[f"{t}/{n}"] for n in run.prunable}
        assert sum(int(m.sum()) for m in mask.values()) == kept_count(total, target)
        # The row is the target's: its count, its sparsity, and only epochs at it could be selected.
        assert row["ticket"] == f"gmp_{target!r}" and row["active_params"] == kept_count(total, target)
        assert row["sparsity"] == round(1 - kept_count(total, target) / total, 6)
        entry = meta["targets"][t]
        assert row["search_step"] == entry["search_step"] and row["best_epoch"] >= entry["search_epoch"]
        assert row["epochs_trained"] == GMP["epochs"] - entry["search_epoch"]
        # gmp_ticket trained: the ticket starts from the run's weights at the target, at that epoch.
        weights, start_epoch = starts[t]
        assert start_epoch == entry["search_epoch"]
        for name in run.prunable:
            assert torch.equal(weights[name], stored[f"{t}/weights/{name}"])
            assert torch.equal(weights[name] != 0, mask[name] & (weights[name] != 0))
    # Pruned weights are never revived: the 0.8 mask lies inside the 0.5 one.
    for name in run.prunable:
        assert not bool((stored[f"1/{name}"] & ~stored[f"0/{name}"]).any())


def test_the_lottery_variant_retrains_each_mask_from_the_initial_weights(tmp_path, monkeypatch):
    run, _, starts = _plan(tmp_path, monkeypatch, gmp_ticket="rewind", gmp_schedule="linear")
    init = run.init_state()
    stored = checkpoint.load(run.paths.search_state("gmp"))["masks"]
    assert not any("/weights/" in k for k in stored)  # only trained tickets need the run's weights
    for t, ((weights, start_epoch), row) in enumerate(zip(starts, run.rows)):
        assert start_epoch == 0 and row["epochs_trained"] == GMP["epochs"]
        for name in run.prunable:
            assert torch.equal(weights[name], init[name] * stored[f"{t}/{name}"])
        assert row["test_recall@20"] > 0.02  # trained: a random ranking is ~0.012


def test_a_rerun_resumes_and_workers_give_the_sequential_result_bit_for_bit(tmp_path, monkeypatch, trained_keys):
    from tests.test_parallel import assert_same_run

    settings = {**GMP, "epochs": 2, "gmp_end_epoch": 1, "embedding_size": 8, "worker_threads": 1, "progress": False}
    first = recbole_lth.run(model="BPR", dataset="ml-100k", method="gmp",
                            config_dict={**settings, "run_dir": str(tmp_path / "seq")})
    assert trained_keys == ["gmp_0.5", "gmp_0.8"]
    monkeypatch.setattr(gmp.GradualPruning, "fit", lambda self: pytest.fail("pruned again"))
    trained_keys.clear()
    again = recbole_lth.run(model="BPR", dataset="ml-100k", method="gmp",
                            config_dict={**settings, "run_dir": str(tmp_path / "seq")})
    assert trained_keys == [] and again.rows == first.rows
    monkeypatch.undo()
    recbole_lth.run(model="BPR", dataset="ml-100k", method="gmp",
                    config_dict={**settings, "workers": 2, "run_dir": str(tmp_path / "par")})
    assert_same_run(tmp_path / "seq", tmp_path / "par")


@pytest.mark.parametrize("args, key, allowed", [
    (["--gmp_schedule=exponential"], "gmp_schedule", "cubic, linear, cosine"),
    (["--gmp_ticket=late"], "gmp_ticket", "trained, rewind"),
    (["--gmp_frequency=0"], "gmp_frequency", "a whole number >= 1"),
    (["--gmp_start_epoch=3", "--gmp_end_epoch=3"], "gmp_start_epoch", "below gmp_end_epoch = 3"),
    (["--gmp_end_epoch=4"], "gmp_end_epoch", "below epochs = 4 with gmp_ticket trained"),
    (["--gmp_end_epoch=5", "--gmp_ticket=rewind"], "gmp_end_epoch", "up to epochs = 4"),
])
@pytest.mark.filterwarnings("ignore")
def test_a_bad_gmp_value_is_one_line_and_nothing_is_written(tmp_path, capsys, args, key, allowed):
    argv = ["--model=BPR", "--dataset=ml-100k", "--method=gmp", "--epochs=4", "--gmp_start_epoch=0",
            "--state=WARNING", f"--output_root={tmp_path / 'runs'}"]
    assert main(argv + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"recbole_lth: invalid {key}=") and allowed in err[0], err
    assert not (tmp_path / "runs").exists()


def test_the_defaults_pass_and_a_rewind_run_may_end_pruning_at_its_last_epoch():
    settings_for("BPR", "ml-100k", "gmp")
    settings_for("BPR", "ml-100k", "gmp", config_dict={"epochs": 4, "gmp_end_epoch": 4, "gmp_ticket": "rewind"})
    with pytest.raises(ConfigError):
        settings_for("BPR", "ml-100k", "gmp", config_dict={"epochs": 4, "gmp_end_epoch": 4})


def test_a_nan_in_the_pruning_run_is_one_line_and_exit_1(tmp_path, capsys):
    argv = ["--model=BPR", "--dataset=ml-100k", "--method=gmp", "--epochs=2", "--gmp_start_epoch=0",
            "--gmp_end_epoch=1", "--learning_rate=1e30", "--target_sparsities=[0.5]", "--state=WARNING",
            "--embedding_size=8", "--train_batch_size=4096", f"--run_dir={tmp_path / 'run'}"]
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recbole_lth:")]
    assert len(err) == 1 and "gmp's pruning run" in err[0] and "NaN" in err[0] and "learning_rate" in err[0], err


@pytest.mark.parametrize("model, scope", [("LightGCN", "global"), ("MultiVAE", "per_table"), ("NeuMF", "per_table"),
                                          ("CDAE", "global"), ("NGCF", "global")])
def test_other_backbones_and_scopes(quick_run, model, scope):
    # The autoencoders step once per batch of users: small batches give several steps per epoch.
    batch = {"train_batch_size": 32} if model in ("MultiVAE", "CDAE") else {}
    result = quick_run(model, "gmp", **{**KEYS, "epochs": 2, "gmp_end_epoch": 1, "target_sparsities": [0.5],
                                        "prune_scope": scope, **batch})
    (row,) = result.rows
    ticket = checkpoint.load(result.run_dir / "tickets" / "gmp_0.5" / "ticket.pt")
    for name, mask in ticket["masks"].items():
        kept = int(mask.sum())
        if scope == "per_table":
            assert kept == kept_count(mask.numel(), 0.5), name
        assert torch.all(ticket["state_dict"][name][~mask] == 0)
    assert row["active_params"] == kept_count(row["prunable_params"], 0.5) or scope == "per_table"
    assert row["sparsity"] == pytest.approx(0.5, abs=1e-4) and row["best_epoch"] >= row["search_epoch"]
