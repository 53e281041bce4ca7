"""End-to-end lottery-ticket searches on ml-100k (1-2 epochs)."""
import csv

import pytest
import torch

from recbole_lth import api, methods
from recbole_lth.core import checkpoint
from recbole_lth.core.errors import TrainingDiverged
from recbole_lth.engine.run import Run, TicketHook

from conftest import QUICK


class StartRecorder(TicketHook):
    """Records the prunable weights and masks each ticket starts training from."""

    def __init__(self):
        self.starts = []

    def attach(self, run, trainer):
        self.starts.append({
            "weights": {n: p.detach().clone() for n, p in run.prunable.items()},
            "masks": {n: m.clone() for n, m in trainer.mask.masks.items()},
            "start_epoch": trainer.start_epoch,
        })


@pytest.fixture
def search(tmp_path):
    """``search(model, method, **overrides)`` -> (run, recorder) after the method ran."""

    def _search(model="BPR", method="imp", **overrides):
        run = api.prepare(model=model, dataset="ml-100k", method=method,
                          config_dict={**QUICK, "output_root": str(tmp_path / "runs"), **overrides})
        recorder = StartRecorder()
        run.ticket_hooks.append(recorder)
        methods.get(method).plan(run)
        return run, recorder

    return _search


def _rows(run):
    return list(csv.DictReader(open(run.run_dir / "results.csv")))


def test_imp_rewinds_survivors_to_the_saved_initial_weights_exactly(search):
    run, rec = search("BPR", "imp", rounds=2, epochs=1)
    init = checkpoint.load(run.run_dir / "init_state.pt")["state_dict"]
    for start in rec.starts:
        for name, weights in start["weights"].items():
            expected = init[name] * start["masks"][name]
            assert torch.equal(weights, expected)
    rows = _rows(run)
    total = int(rows[0]["prunable_params"])
    for row, expected in zip(rows, [0.0, 0.2, 0.36]):  # 1-(1-p)^k, to one weight
        assert abs(total - int(row["active_params"]) - expected * total) <= 1
    # every later mask is a subset of the earlier one
    assert not (rec.starts[2]["masks"]["user_embedding.weight"] & ~rec.starts[1]["masks"]["user_embedding.weight"]).any()


def test_late_rewinding_restarts_from_the_epoch_k_state(search):
    run, rec = search("BPR", "imp", rounds=1, epochs=2, rewind_epoch=1)
    saved = checkpoint.load(run.run_dir / "rewind_state.pt")
    assert saved["meta"]["epoch"] == 1
    init = checkpoint.load(run.run_dir / "init_state.pt")["state_dict"]
    start = rec.starts[1]
    name = "item_embedding.weight"
    assert torch.equal(start["weights"][name], saved["state_dict"][name] * start["masks"][name])
    assert not torch.equal(saved["state_dict"][name], init[name])
    assert start["start_epoch"] == 1 and rec.starts[0]["start_epoch"] == 0


def test_wr_continues_from_the_trained_weights(search):
    run, rec = search("BPR", "wr", rounds=1, epochs=2)
    trained = checkpoint.load(run.run_dir / "tickets" / "dense" / "ticket.pt")["state_dict"]
    init = checkpoint.load(run.run_dir / "init_state.pt")["state_dict"]
    start = rec.starts[1]
    for name, weights in start["weights"].items():
        assert torch.equal(weights, trained[name] * start["masks"][name])
        assert not torch.equal(weights, init[name] * start["masks"][name])


@pytest.mark.parametrize("method", ["omp", "rp"])
@pytest.mark.parametrize("scope", ["global", "per_table"])
def test_one_shot_methods_hit_each_requested_sparsity(search, method, scope):
    targets = [0.5, 0.9]
    run, rec = search("BPR", method, target_sparsities=targets, epochs=1, prune_scope=scope)
    rows = [r for r in _rows(run) if float(r["target_sparsity"]) > 0]
    assert [float(r["target_sparsity"]) for r in rows] == targets
    total = int(rows[0]["prunable_params"])
    for row, target in zip(rows, targets):
        assert abs(int(row["active_params"]) - (1 - target) * total) <= len(run.prunable)
        if scope == "per_table":
            for name in run.prunable:
                assert float(row[f"sparsity[{name}]"]) == pytest.approx(target, abs=1e-3)
    if method == "rp":  # same initial weights under every random mask
        init = checkpoint.load(run.run_dir / "init_state.pt")["state_dict"]
        for start in rec.starts:
            for name, weights in start["weights"].items():
                assert torch.equal(weights, init[name] * start["masks"][name])


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "NeuMF", "MultiVAE", "CDAE"])
def test_each_backbone_runs_one_imp_round(quick_run, model):
    # learning_rate 0.01 (and several steps for the autoencoders, which batch
    # users) so that one epoch already learns: RecBole's 0.001 leaves BPR and
    # CDAE at chance after one epoch.
    batch = {"train_batch_size": 128} if model in ("MultiVAE", "CDAE") else {}
    result = quick_run(model, "imp", rounds=1, epochs=1, learning_rate=0.01, **batch)
    rows = list(csv.DictReader(open(result.results_csv)))
    assert [r["ticket"] for r in rows] == ["dense", "imp_round_01"]
    assert float(rows[1]["sparsity"]) == pytest.approx(0.2, abs=1e-4)
    assert int(rows[1]["nonzero_params"]) <= int(rows[1]["active_params"])
    # Far better than chance (a random ranking's Recall@20 on ml-100k is
    # ~0.012); a broken mask, loss or evaluation would not be.
    assert 0.04 < float(rows[0]["test_recall@20"]) <= 1.0
    assert 0.04 < float(rows[1]["test_recall@20"]) <= 1.0
    assert rows[1]["best_epoch"] == "0"


def _masks(run_dir):
    return {
        p.parent.name: checkpoint.load(p)["masks"]
        for p in sorted((run_dir / "tickets").glob("*/ticket.pt"))
    }


def test_resume_after_interruption_gives_identical_masks(quick_run, tmp_path, monkeypatch):
    settings = dict(rounds=3, epochs=1)
    full = quick_run("BPR", "imp", run_dir=str(tmp_path / "full"), **settings)

    trained = []
    original = Run._train

    def interrupted(self, key, *args, **kwargs):
        if key == "imp_round_02":
            raise KeyboardInterrupt
        trained.append(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(Run, "_train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quick_run("BPR", "imp", run_dir=str(tmp_path / "resumed"), **settings)
    assert trained == ["dense", "imp_round_01"]

    def counting(self, key, *args, **kwargs):
        trained.append(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(Run, "_train", counting)
    resumed = quick_run("BPR", "imp", run_dir=str(tmp_path / "resumed"), **settings)
    assert trained == ["dense", "imp_round_01", "imp_round_02", "imp_round_03"]  # finished rounds not redone

    a, b = _masks(full.run_dir), _masks(resumed.run_dir)
    assert list(a) == list(b) == ["dense", "imp_round_01", "imp_round_02", "imp_round_03"]
    for key in a:
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    rows_a = list(csv.DictReader(open(full.results_csv)))
    rows_b = list(csv.DictReader(open(resumed.results_csv)))
    assert [r["ticket"] for r in rows_b] == [r["ticket"] for r in rows_a]
    assert [r["test_recall@20"] for r in rows_b] == [r["test_recall@20"] for r in rows_a]


def test_nan_loss_stops_the_round_and_keeps_finished_rounds(quick_run, tmp_path, monkeypatch):
    from recbole.model.general_recommender.bpr import BPR

    original = BPR.calculate_loss

    def poisoned(self, interaction):
        loss = original(self, interaction)
        # the dense round_00 trains normally; a pruned table (exact zeros) diverges
        return loss * float("nan") if bool((self.user_embedding.weight == 0).any()) else loss

    monkeypatch.setattr(BPR, "calculate_loss", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="imp_round_01.*NaN"):
        quick_run("BPR", "imp", run_dir=str(run_dir), rounds=2, epochs=1, train_batch_size=2048)
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert [r["ticket"] for r in rows] == ["dense"]
    monkeypatch.setattr(BPR, "calculate_loss", original)
    result = quick_run("BPR", "imp", run_dir=str(run_dir), rounds=2, epochs=1, train_batch_size=2048)
    assert [r["ticket"] for r in csv.DictReader(open(result.results_csv))] == ["dense", "imp_round_01", "imp_round_02"]


def test_imp_stops_once_target_sparsity_is_reached(quick_run):
    # 0.2, 0.36, 0.488 reach 0.4 at round 3; rounds=10 is the upper limit only.
    result = quick_run("BPR", "imp", rounds=10, target_sparsity=0.4, epochs=1)
    rows = list(csv.DictReader(open(result.results_csv)))
    assert [r["ticket"] for r in rows] == ["dense", "imp_round_01", "imp_round_02", "imp_round_03"]
    assert float(rows[-1]["sparsity"]) == pytest.approx(0.488, abs=1e-4)
    assert float(rows[-2]["sparsity"]) < 0.4 <= float(rows[-1]["sparsity"])


def test_resume_after_changing_a_key_the_readme_calls_safe(quick_run, tmp_path, trained_keys):
    run_dir = str(tmp_path / "run")
    first = quick_run("BPR", "omp", run_dir=run_dir, target_sparsities=[0.5], epochs=1)
    assert trained_keys == ["dense", "omp_0.5"]
    # show_progress, state, gpu_id and eval_batch_size do not change results: the run resumes.
    again = quick_run("BPR", "omp", run_dir=run_dir, target_sparsities=[0.5], epochs=1,
                      show_progress=True, state="ERROR", gpu_id="1", eval_batch_size=1682 * 5)
    assert trained_keys == ["dense", "omp_0.5"]
    assert [r["test_recall@20"] for r in again.rows] == [r["test_recall@20"] for r in first.rows]


def test_missing_rewind_state_is_a_clear_error_and_keeps_the_dense_ticket(quick_run, tmp_path, monkeypatch):
    import recbole.trainer.trainer as recbole_trainer

    real = recbole_trainer.early_stopping

    def stop_after_first_evaluation(value, best, cur_step, max_step, bigger=True):
        best, cur_step, _, update = real(value, best, cur_step, max_step, bigger)
        return best, cur_step, True, update

    # Early stopping ends the dense ticket after epoch 1, before rewind_epoch 3.
    monkeypatch.setattr(recbole_trainer, "early_stopping", stop_after_first_evaluation)
    run_dir = tmp_path / "rewind"
    with pytest.raises(TrainingDiverged, match="rewind_epoch=3.*no state to rewind to"):
        quick_run("BPR", "omp", run_dir=str(run_dir), epochs=5, rewind_epoch=3, target_sparsities=[0.5])
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert [r["ticket"] for r in rows] == ["dense"] and int(rows[0]["epochs_trained"]) < 3
    assert not (run_dir / "rewind_state.pt").exists()
