"""Distillation (Distiller, kd_* keys, imp_kd/rp_kd) and the small_dense/lcm baselines."""
from __future__ import annotations

import csv
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from recbole_lth import methods
from recbole_lth.api import prepare, settings_for
from recbole_lth.core import checkpoint
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.masking import ParameterMask, select_prunable
from recbole_lth.engine import builder
from recbole_lth.engine.run import Run
from recbole_lth.methods.small_dense import small_sizes
from recbole_lth.sparse import distill

from conftest import quick_settings

MODELS = ("BPR", "LightGCN", "NeuMF", "MultiVAE", "CDAE")


def _prepare(tmp_path, model, method="imp", **overrides) -> Run:
    return prepare(model=model, dataset="ml-100k", method=method,
                   config_dict=quick_settings(model, epochs=1, output_root=str(tmp_path / "runs"), **overrides))


def _rows(result_or_dir):
    path = getattr(result_or_dir, "results_csv", None) or result_or_dir / "results.csv"
    return list(csv.DictReader(open(path)))


def _ticket(run_dir, key):
    return checkpoint.load(run_dir / "tickets" / key / "ticket.pt")


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ losses
def test_score_kd_loss_is_zero_iff_student_equals_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(8, 5) * 3
    for softmax in (False, True):
        for temperature in (0.5, 1.0, 4.0):
            assert distill.score_kd_loss(teacher.clone(), teacher, temperature, softmax).item() == 0.0
            other = teacher + 0.1 * torch.randn(8, 5)
            assert distill.score_kd_loss(other, teacher, temperature, softmax).item() > 0.0
    # The softmax form ignores a per-row shift (MultiVAE's logits), the Bernoulli form does not.
    assert abs(distill.score_kd_loss(teacher + 2.0, teacher, 1.0, True).item()) < 1e-6
    assert distill.score_kd_loss(teacher + 2.0, teacher, 1.0, False).item() > 0.0


def test_ranking_weights_follow_position_importance():
    w = distill.ranking_weights(4, 1.0, "cpu")
    assert torch.allclose(w.sum(), torch.tensor(1.0))
    assert torch.allclose(w[1:] / w[:-1], torch.full((3,), math.exp(-1.0)))


@pytest.mark.parametrize("model_name", MODELS)
def test_kd_losses_and_small_sizes_on_every_model(tmp_path, model_name):
    run = _prepare(tmp_path, model_name, kd_weight=1.0)
    model = run.model
    batch = next(iter(run.train_data)).to(run.device)

    # Score KD: zero when the student is the teacher (deterministic in eval mode), positive otherwise.
    teacher = distill.build_teacher(run, model.state_dict())
    distiller = distill.Distiller({**run.settings, "kd_type": "score"})
    distiller.teacher = teacher
    model.eval()
    assert distiller.kd_loss(model, batch).item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        for p in run.prunable.values():
            p.add_(torch.randn_like(p))
    assert distiller.kd_loss(model, batch).item() > 1e-6
    model.train()

    # Ranking KD: the teacher's top-K avoid each user's training items; the
    # loss is positive and its gradient reaches the student only.
    ranking = distill.Distiller({**run.settings, "kd_type": "ranking", "kd_topk": 5})
    ranking.teacher = teacher
    dataset = run.train_data.dataset
    ranking.teacher_topk = distill.teacher_top_items(teacher, dataset, 5, 100, run.device)
    ranking.rank_weights = distill.ranking_weights(5, 1.0, run.device)
    assert ranking.teacher_topk.shape == (dataset.user_num, 5)
    history = dataset.inter_matrix(form="csr")
    for user in (1, 2, dataset.user_num - 1):
        seen = set(history[user].indices.tolist())
        assert seen and not seen & set(ranking.teacher_topk[user].tolist())
    # Position weights: the teacher scored against its own top-K in rank order loses less than against
    # the same items reversed (the heavier weights on its higher scores: the rearrangement inequality).
    with torch.no_grad():
        in_order = ranking.kd_loss(teacher, batch)
        ranking.teacher_topk = ranking.teacher_topk.flip(1)
        reversed_order = ranking.kd_loss(teacher, batch)
        ranking.teacher_topk = ranking.teacher_topk.flip(1)
    assert in_order < reversed_order
    loss = ranking.kd_loss(model, batch)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in run.prunable.values())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())

    # small_dense: each prunable table keeps its other side and ⌈w·(1-s)⌉ of the shrunk side.
    sizes = small_sizes(run.config, 0.5)
    before = {key: run.config[key] for key in sizes}
    small = builder.new_model(run.config, run.train_data.dataset, sizes)
    small_tables = select_prunable(small, run.settings["prune_params"])
    assert small_tables.keys() == run.prunable.keys()
    for name, full in run.prunable.items():
        kept = [a == b for a, b in zip(full.shape, small_tables[name].shape)]
        assert kept.count(True) == 1, (name, full.shape, small_tables[name].shape)
        side = kept.index(False)
        assert small_tables[name].shape[side] == math.ceil(full.shape[side] * 0.5)
    assert {key: run.config[key] for key in sizes} == before  # the run's config is restored


# ---------------------------------------------------------- KD ticket runs
def test_kd_weight_zero_is_the_plain_run_and_kd_keeps_the_teacher_frozen(quick_run, tmp_path):
    plain = quick_run("BPR", "imp", rounds=1, epochs=1)
    zero = quick_run("BPR", "imp_kd", rounds=1, epochs=1, kd_weight=0)
    ignore = {"method", "ticket", "train_seconds"}
    plain_rows, zero_rows = _rows(plain), _rows(zero)
    assert [r["ticket"] for r in zero_rows] == ["dense", "imp_kd_round_01"]
    assert [{k: v for k, v in r.items() if k not in ignore} for r in plain_rows] == [
        {k: v for k, v in r.items() if k not in ignore} for r in zero_rows
    ]
    for key, zero_key in (("dense", "dense"), ("imp_round_01", "imp_kd_round_01")):
        a, b = _ticket(plain.run_dir, key), _ticket(zero.run_dir, zero_key)
        assert _same_tensors(a["masks"], b["masks"]) and _same_tensors(a["state_dict"], b["state_dict"])

    # The same run with distillation: round 1 is distilled from round 0 and
    # the teacher's weights never change.
    run = _prepare(tmp_path, "BPR", "imp_kd", rounds=1, kd_weight=1.0, kd_type="ranking")
    # The dense round is the plain run's (a finished ticket is resumed, not retrained).
    shutil.copytree(plain.run_dir / "tickets" / "dense", run.run_dir / "tickets" / "dense")
    distill.install(run)
    methods.get("imp_kd").plan(run)
    (distiller,) = [h for h in run.ticket_hooks if isinstance(h, distill.Distiller)]
    dense = _ticket(run.run_dir, "dense")
    assert _same_tensors({k: v.cpu() for k, v in distiller.teacher.state_dict().items()}, dense["state_dict"])
    kd_round = _ticket(run.run_dir, "imp_kd_round_01")
    assert _same_tensors(kd_round["masks"], _ticket(plain.run_dir, "imp_round_01")["masks"])
    assert not _same_tensors(kd_round["state_dict"], _ticket(plain.run_dir, "imp_round_01")["state_dict"])
    rows = _rows(run.run_dir)
    assert [(r["ticket"], r["kd_weight"], r["kd_type"]) for r in rows] == [
        ("dense", "", ""), ("imp_kd_round_01", "1.0", "ranking")
    ]
    # A ticket with a full mask (the dense model, the teacher itself) is left alone.
    dense_trainer = SimpleNamespace(mask=ParameterMask(run.prunable), model=run.model, loss_func=run.model.calculate_loss)
    distiller.attach(run, dense_trainer)
    assert dense_trainer.loss_func == run.model.calculate_loss
    assert distiller.row_fields() == {"kd_weight": 0.0, "kd_type": ""}


def test_rp_kd_trains_its_dense_teacher_first_and_takes_kd_teacher(quick_run, tmp_path):
    # MultiVAE: autoencoder scores (whole rows), softmax score KD.
    result = quick_run("MultiVAE", "rp_kd", epochs=1, target_sparsities=[0.5], kd_type="score")
    rows = _rows(result)
    # The dense teacher is trained before distillation is installed: no kd columns in its row.
    assert [(r["ticket"], r["kd_weight"]) for r in rows] == [("dense", ""), ("rp_kd_0.5", "1.0")]
    assert all(math.isfinite(float(r["test_recall@20"])) for r in rows)

    # With kd_teacher, no dense ticket is trained: the teacher is that checkpoint.
    path = result.run_dir / "tickets" / "dense" / "ticket.pt"
    run = _prepare(tmp_path, "MultiVAE", "rp_kd", target_sparsities=[0.5], kd_type="score", kd_teacher=str(path))
    distill.install(run)
    (distiller,) = run.ticket_hooks
    assert run.rows == [] and not (run.run_dir / "tickets").exists()
    distiller.load_teacher(run)
    expected = checkpoint.load(path)["state_dict"]
    assert _same_tensors({k: v.cpu() for k, v in distiller.teacher.state_dict().items()}, expected)

    # A checkpoint of another model stops the run before anything is written.
    with pytest.raises(ConfigError, match="kd_teacher.*MultiVAE"):
        _prepare(tmp_path, "BPR", "rp_kd", target_sparsities=[0.5], kd_teacher=str(path))
    assert not list((tmp_path / "runs").glob("BPR-*"))


# --------------------------------------------------------------- baselines
def test_small_dense_and_lcm_rows(quick_run):
    small = quick_run("BPR", "small_dense", epochs=1, target_sparsities=[0.5])
    (row,) = _rows(small)
    full = int(row["prunable_params"])
    n_rows = full // 16  # n_users + n_items
    assert row["ticket"] == "small_dense_0.5" and float(row["target_sparsity"]) == 0.5
    assert int(row["nonzero_params"]) == int(row["active_params"]) == n_rows * 8
    assert int(row["trainable_params"]) == n_rows * 8
    assert float(row["sparsity"]) == 0.5
    stored = _ticket(small.run_dir, "small_dense_0.5")["state_dict"]
    assert stored["user_embedding.weight"].shape[1] == 8
    assert (small.run_dir / "baseline_init" / "small_dense_0.5.pt").exists()

    lcm = quick_run("LightGCN", "lcm", epochs=1, target_sparsities=[0.75])
    dense_row, lcm_row = _rows(lcm)
    assert (dense_row["ticket"], lcm_row["ticket"]) == ("dense", "lcm_0.75")
    assert int(lcm_row["prunable_params"]) == n_rows * 16
    assert int(lcm_row["nonzero_params"]) == n_rows * 4  # the deployed table E_teacher W + b
    assert int(lcm_row["trainable_params"]) == 2 * (16 * 4 + 4)  # the two projections
    assert float(lcm_row["sparsity"]) == 0.75
    teacher = _ticket(lcm.run_dir, "dense")["state_dict"]
    trained = _ticket(lcm.run_dir, "lcm_0.75")["state_dict"]
    for name in ("user_embedding", "item_embedding"):
        assert torch.equal(trained[f"{name}.teacher_table"], teacher[f"{name}.weight"])  # frozen


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "method, overrides, key",
    [
        ("imp", {"kd_weight": -1}, "kd_weight"),
        ("imp_kd", {"kd_type": "logits"}, "kd_type"),
        ("imp_kd", {"kd_temperature": 0}, "kd_temperature"),
        ("imp_kd", {"kd_topk": 0}, "kd_topk"),
        ("rp", {"kd_weight": 1.0, "kd_teacher": "missing.pt"}, "kd_teacher"),
        ("imp_kd", {"rounds": None}, "rounds"),
        ("omp_kd", {"target_sparsities": []}, "target_sparsities"),
        ("small_dense", {"kd_weight": 1.0}, "kd_weight"),
        ("small_dense", {"target_sparsities": [1.0]}, "target_sparsities"),
        ("lcm", {"model": "NeuMF"}, "model"),
    ],
)
def test_bad_kd_and_baseline_settings(method, overrides, key):
    overrides = dict(overrides)
    with pytest.raises(ConfigError) as err:
        settings_for(overrides.pop("model", "BPR"), "ml-100k", method, None, overrides)
    assert err.value.key == key


def test_ranking_kd_on_bpr_reads_its_rows_sparsely_with_the_flat_pairs_values(tmp_path):
    # BPR's ranking KD scores each batch user against its K teacher items
    # with one user lookup and sparse-gradient rows: the loss and the
    # gradients of scoring the flattened pairs through predict, faster.
    from recbole_lth.sparse import scoring

    run = _prepare(tmp_path, "BPR", kd_weight=1.0)
    model = run.model
    batch = next(iter(run.train_data)).to(run.device)
    users = batch[model.USER_ID]
    items = torch.randint(1, run.train_data.dataset.item_num, (len(users), 4))
    tables = (model.user_embedding.weight, model.item_embedding.weight)

    grid = scoring.log_likes(model, users, items)
    (grid * torch.arange(1.0, 5.0)).sum().backward()
    assert all(t.grad.is_sparse for t in tables)  # the fast path was taken
    grid_grads = [t.grad.to_dense() for t in tables]
    model.zero_grad(set_to_none=True)
    flat = torch.nn.functional.logsigmoid(scoring.pair_logits(model, users, items))
    (flat * torch.arange(1.0, 5.0)).sum().backward()
    torch.testing.assert_close(grid, flat, atol=1e-6, rtol=0)
    for fast, plain in zip(grid_grads, (t.grad for t in tables)):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(fast, plain, atol=1e-6, rtol=0)
    # With the model's own loss the gradients add up to a dense one, as Adam (fused) needs.
    model.zero_grad(set_to_none=True)
    (model.calculate_loss(batch) - scoring.log_likes(model, users, items).mean()).backward()
    assert not any(t.grad.is_sparse for t in tables)


def test_ranking_kd_rows_join_the_gradient_in_place_before_the_step(tmp_path):
    # In a ticket's training the KD rows' gradients are added into the tables'
    # .grad by the optimizer's pre-step (first observer): the gradients autograd
    # would give, and they reach the step.
    from recbole_lth.core import pruning
    from recbole_lth.engine.trainer import sparse_trainer

    run = _prepare(tmp_path, "BPR", kd_weight=1.0)
    model = run.model
    params = select_prunable(model, "embeddings")
    trainer = sparse_trainer(run.config, model, ParameterMask(params, pruning.random_mask(params, 0.5, "global")))
    distiller = distill.Distiller({**run.settings, "kd_type": "ranking", "kd_topk": 5}, model.state_dict())
    distiller.attach(run, trainer)
    batch = next(iter(run.train_data)).to(run.device)
    tables = list(params.values())

    def gradients():
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.loss_func(batch).backward()
        if distiller.deferred is not None:
            assert distiller.deferred.pending
            distiller.deferred.flush()
        return [t.grad.clone() for t in tables]

    deferred = gradients()
    rows = distiller.deferred
    distiller.deferred = None  # autograd adds the sparse row gradients
    plain = gradients()
    for a, b in zip(deferred, plain):
        assert not a.is_sparse
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    distiller.deferred = rows
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.loss_func(batch).backward()
    trainer.optimizer.step()
    assert not rows.pending  # the pre-step flushed them
