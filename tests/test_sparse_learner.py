"""``learner: sparse_adam`` (issue 36): tables read with sparse gradients, lazy Adam on their looked-up rows."""
from __future__ import annotations

import csv
import shutil

import pytest
import torch
from torch import nn

import recbole_lth
from recbole_lth.core.masking import ParameterMask
from recbole_lth.core.optim import LazyAdam, RowwiseAdagrad, read_rows_sparsely

from conftest import quick_settings


def _table(seed=0, rows=50, d=4):
    torch.manual_seed(seed)
    return nn.Embedding(rows, d)


def _steps(module, optimizer, batches):
    for ids in batches:
        optimizer.zero_grad(set_to_none=True)
        (module(ids) ** 2).sum().backward()
        optimizer.step()


BATCHES = [torch.tensor(ids) for ids in ([1, 2, 2, 7], [3, 1, 9], [40, 2, 2, 2], [7, 8])]


@pytest.mark.parametrize("fused", [True, False])
def test_lazy_adam_updates_the_looked_up_rows_as_adam_and_leaves_the_others(fused):
    lazy, dense = _table(), _table()
    read_rows_sparsely(lazy)
    opt = LazyAdam(lazy.parameters(), lr=0.1, fused=fused)
    _steps(lazy, opt, BATCHES[:1])
    ref = torch.optim.Adam(dense.parameters(), lr=0.1, fused=fused)
    _steps(dense, ref, BATCHES[:1])
    # One step: every row with a gradient is Adam's, bit for bit; a row with none has not moved.
    assert torch.equal(lazy.weight, dense.weight)
    init = _table().weight
    _steps(lazy, opt, BATCHES[1:])
    untouched = [r for r in range(50) if r not in {1, 2, 3, 7, 8, 9, 40}]
    assert torch.equal(lazy.weight[untouched], init[untouched])
    assert not torch.equal(lazy.weight[[8, 9, 40]], init[[8, 9, 40]])
    # Adam moves a row by its momentum after its last lookup; lazy Adam does not: not the same algorithm.
    _steps(dense, ref, BATCHES[1:])
    assert not torch.equal(lazy.weight[1], dense.weight[1])


def test_lazy_adam_is_torch_sparse_adam_up_to_where_eps_is_added():
    lazy, sparse = _table(), _table()
    read_rows_sparsely(lazy)
    read_rows_sparsely(sparse)
    _steps(lazy, LazyAdam(lazy.parameters(), lr=0.05), BATCHES)
    _steps(sparse, torch.optim.SparseAdam(list(sparse.parameters()), lr=0.05), BATCHES)
    assert torch.allclose(lazy.weight, sparse.weight, atol=1e-6)
    assert not torch.equal(lazy.weight, _table().weight)


def test_a_dense_gradient_gets_torchs_adam_bit_for_bit():
    lazy, dense = nn.Linear(6, 3), nn.Linear(6, 3)
    dense.load_state_dict(lazy.state_dict())
    x = torch.randn(5, 6)
    for module, opt in ((lazy, LazyAdam(lazy.parameters(), lr=0.01, weight_decay=0.1)),
                        (dense, torch.optim.Adam(dense.parameters(), lr=0.01, weight_decay=0.1, fused=True))):
        for _ in range(3):
            opt.zero_grad()
            module(x).pow(2).sum().backward()
            opt.step()
    assert torch.equal(lazy.weight, dense.weight) and torch.equal(lazy.bias, dense.bias)


def test_rowwise_adagrad_keeps_one_accumulator_per_row_and_moves_only_looked_up_rows():
    table = _table()
    read_rows_sparsely(table)
    init = table.weight.detach().clone()
    opt = RowwiseAdagrad(table.parameters(), lr=0.1)
    _steps(table, opt, BATCHES[:1])
    # One step, ids [1, 2, 2, 7]: g = 2w per lookup, row 2 looked up twice (g = 4w).
    for row, looks in ((1, 1), (2, 2), (7, 1)):
        g = 2 * looks * init[row]
        expected = init[row] - 0.1 * g / ((g ** 2).mean().sqrt() + 1e-10)
        assert torch.allclose(table.weight[row], expected, atol=1e-6)
    state = opt.state[table.weight]
    assert state["row_sum"].shape == (50,) and torch.count_nonzero(state["row_sum"]) == 3
    assert torch.equal(table.weight[[0, 3, 4]], init[[0, 3, 4]])


@pytest.mark.parametrize("optimizer", [LazyAdam, RowwiseAdagrad])
@pytest.mark.parametrize("warm", [False, True])
def test_pruned_weights_stay_zero_with_row_sparse_gradients(warm, optimizer):
    table = _table()
    read_rows_sparsely(table)
    keep = torch.rand(table.weight.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    mask = ParameterMask({"weight": table.weight}, {"weight": keep})
    if warm:
        mask.keep_optimizer_state()
    opt = optimizer(table.parameters(), lr=0.1, weight_decay=0.01)
    mask.attach(opt)
    before = table.weight.detach().clone()
    _steps(table, opt, BATCHES)
    assert not table.weight[~keep].any()
    assert not torch.equal(table.weight[keep], before[keep])
    state = opt.state[table.weight]
    if not warm and optimizer is LazyAdam:  # a cold state stays zero where pruned: a regrown weight starts afresh
        assert not state["exp_avg"][~keep].any() and not state["exp_avg_sq"][~keep].any()


METHODS = {  # label: (method, its keys)
    "dense": ("dense", {}),
    "imp": ("imp", {"rounds": 1}),
    "omp": ("omp", {}),
    "rp": ("rp", {}),
    "snip": ("snip", {}),
    "gmp": ("gmp", {"gmp_start_epoch": 0, "gmp_end_epoch": 1}),
    "eb": ("eb", {}),
    "dsl": ("dsl", {"dsl_update_epochs": 0.5}),
    "pep": ("pep", {"pep_schedule_epochs": 2, "epochs": 4, "train_batch_size": 64}),
    "omp+kd_ranking": ("omp", {"kd_weight": 0.5, "kd_type": "ranking"}),
    "imp+kd_score": ("imp", {"rounds": 1, "kd_weight": 0.5, "kd_type": "score"}),
}


def _rows(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("learner", ["sparse_adam", "rowwise_adagrad"])
@pytest.mark.parametrize("model", ["BPR", "NeuMF"])
@pytest.mark.parametrize("label", sorted(METHODS))
def test_every_method_trains_with_a_row_sparse_learner(tmp_path, tiny_data, model, label, learner):
    data_path, dataset = tiny_data
    method, keys = METHODS[label]
    settings = quick_settings(model, data_path=data_path, learner=learner, target_sparsities=[0.5],
                              output_root=str(tmp_path / "runs"), learning_rate=0.01, **keys)
    result = recbole_lth.run(model=model, dataset=dataset, method=method, config_dict=settings)
    rows = _rows(result.run_dir)
    assert rows and all(r.get("test_recall@20") not in (None, "", "nan") for r in rows), rows
    assert all(r["test_recall@20"] not in ("", "nan") for r in rows), rows
    sparse = [r for r in rows if float(r["target_sparsity"]) > 0]
    if method != "dense":  # every sparse ticket at its target (imp: its round's), pruned weights exactly zero
        assert sparse and all(abs(float(r["sparsity"]) - float(r["target_sparsity"])) < 0.02 for r in sparse), rows
        assert all(int(r["nonzero_params"]) <= int(r["active_params"]) for r in sparse), rows


def test_workers_and_a_resumed_run_give_the_sequential_results_bit_for_bit(tmp_path, tiny_data):
    """sparse_adam tickets on two workers, and a run resumed after a ticket was lost, equal a sequential run."""
    from tests.test_parallel import assert_same_run

    data_path, dataset = tiny_data
    study = quick_settings("NeuMF", data_path=data_path, learner="sparse_adam", target_sparsities=[0.5, 0.8],
                           learning_rate=0.01, dsl_update_epochs=0.5, worker_threads=1, progress=False)

    def run(name, **extra):
        recbole_lth.run(model="NeuMF", dataset=dataset, method=["omp", "dsl"],
                        config_dict={**study, **extra, "run_dir": str(tmp_path / name)})
        return tmp_path / name

    sequential = run("sequential")
    assert_same_run(sequential, run("workers", workers=2))
    resumed = run("resumed")
    lost = resumed / "tickets" / "dsl_0.8"
    assert (lost / "ticket.pt").is_file()
    shutil.rmtree(lost)
    assert_same_run(sequential, run("resumed"))
    assert (lost / "ticket.pt").is_file()


def test_sparse_adam_with_clip_grad_norm_is_refused_before_anything_is_written(tmp_path, capsys):
    """torch has no norm of a sparse gradient: RecBole's clipping stopped the first step with a traceback."""
    from recbole_lth.cli import main

    status = main(["--model=BPR", "--dataset=ml-100k", "--method=omp", "--learner=sparse_adam",
                   "--clip_grad_norm={max_norm: 5}", f"--run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "invalid learner='sparse_adam'" in err[0] and "clip_grad_norm" in err[0]
    assert not (tmp_path / "run").exists()
