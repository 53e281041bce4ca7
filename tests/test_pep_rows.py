"""PEP's O(batch) search step: the row-sparse Adam on s, and the count every few steps.

What is exact: a row the step looked up gets torch's Adam bit for bit, a row
it did not look up (and its moments) is left bit for bit as it was, and the
masks are those of a literal host-side count at the search's check steps.
The row-sparse search is opt-in (``row_sparse=True``): the default search is
PEP's dense Adam on s, counted every step (tests/test_pep.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recbole_lth.api import prepare
from recbole_lth.core.pruning import keep_top
from recbole_lth.methods import pep
from recbole_lth.sparse.row_adam import RowAdam

from conftest import QUICK, trace_pep_records


def _pair(fused: bool, weight_decay: float = 1e-3):
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(10, 4))
    reference = torch.nn.Parameter(table.detach().clone())
    rows = RowAdam(table, lr=0.01, weight_decay=weight_decay, fused=fused)
    dense = torch.optim.Adam([reference], lr=0.01, weight_decay=weight_decay, foreach=False, fused=fused or None)
    return table, rows, reference, dense


def _same(got, expected, fused):
    if fused:  # the fused kernel's vector body and scalar tail round apart: rows gathered shift the split
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("fused", [True, False])
def test_a_step_that_looks_up_every_row_is_torchs_adam(fused):
    """Bit for bit with the single-tensor Adam; within float rounding of the fused one."""
    table, rows, reference, dense = _pair(fused)
    for _ in range(4):
        index = torch.randint(0, 10, (3, 7))
        index[0], index[1, :3] = torch.arange(7), torch.arange(7, 10)  # every row, some twice
        weights = torch.randn(3, 7, 4)
        (rows.lookup(index, table) * weights).sum().backward()
        rows.step()
        dense.zero_grad()
        (F.embedding(index, reference) * weights).sum().backward()
        dense.step()
        _same(table, reference, fused)
        assert table.grad is None  # the lookup's gradient went to the RowAdam, not to a table-sized .grad
    state = dense.state[reference]
    _same(rows.exp_avg, state["exp_avg"], fused)
    _same(rows.exp_avg_sq, state["exp_avg_sq"], fused)


def test_rows_not_looked_up_are_left_as_they_are_and_the_others_follow_adam():
    table, rows, reference, dense = _pair(fused=True)
    everything = torch.arange(10)
    (rows.lookup(everything, table) * torch.randn(10, 4)).sum().backward()  # moments everywhere
    rows.step()
    before = [t.clone() for t in (table, rows.exp_avg, rows.exp_avg_sq)]
    index = torch.tensor([2, 5, 5])
    (rows.lookup(index, table) * torch.randn(3, 4)).sum().backward()
    assert rows.step() == 3 * 4
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[index] = False
    for now, then in zip((table, rows.exp_avg, rows.exp_avg_sq), before):
        assert torch.equal(now[untouched], then[untouched])  # dense Adam would move them (momentum, L2)
        assert not torch.equal(now[~untouched], then[~untouched])
    assert torch.count_nonzero(rows.grad) == 0  # the step's gradient rows are cleared


def test_a_table_read_whole_updates_every_row():
    table, rows, reference, dense = _pair(fused=False)
    for _ in range(2):
        weights = torch.randn(10, 4)
        index = torch.tensor([1, 1, 3])
        ((table * weights).sum() + rows.lookup(index, table).sum()).backward()  # .weight read + a lookup
        rows.step()
        dense.zero_grad()
        ((reference * weights).sum() + F.embedding(index, reference).sum()).backward()
        dense.step()
        assert torch.equal(table, reference) and table.grad is None


# ------------------------------------------------------------------ the search
FAST = {"pep_init": -6.0, "pep_lr": 0.3, "pep_weight_decay": 1e-3, "pep_pressure": "l2"}


def test_search_counts_every_few_steps_and_records_the_literal_masks(tiny_data, tmp_path, monkeypatch):
    data_path, dataset = tiny_data
    targets = [0.3, 0.5]
    settings = {**QUICK, **FAST, "data_path": data_path, "epochs": 3, "train_batch_size": 8,
                "run_dir": str(tmp_path / "run")}
    run = prepare(model="BPR", dataset=dataset, method="pep", config_dict=settings)

    counted_at, reference = trace_pep_records(monkeypatch)
    for host_check in (True, False):
        counted_at.clear()
        search = pep.PepSearch(run, targets, host_check=host_check, row_sparse=True)
        result = search.fit()
        assert list(search.row_adams) == ["user_embedding.weight", "item_embedding.weight"]
        # The count's share of the table: (80 + 60 + 2) rows x 16 over 3 lookups of 8 rows x 16.
        assert search.check_every == (142 * 16) // (3 * 8 * 16) == 5
        epoch = search.steps_per_epoch
        assert counted_at == [s for s in range(search.step + 1) if s % 5 == 0 or s % epoch == 0]
        steps = [e["search_step"] for e in result["meta"]["targets"]]
        assert all(s in counted_at and s > 0 for s in steps)
        for t, target in enumerate(targets):
            ref = reference[id(search)][t]
            expected = keep_top({"m": ref}, {"m": torch.ones_like(ref, dtype=torch.bool)}, target)["m"]
            got = torch.cat([result["masks"][f"{t}/{n}"].flatten() for n in search.originals])
            assert torch.equal(got, expected)


def test_count_kept_is_the_literal_count():
    torch.manual_seed(0)
    v = torch.randn(30, 8)
    soft = pep.SoftThreshold((30, 8), init=0.0, offset=torch.tensor(-1.5))
    with torch.no_grad():
        soft.s.copy_(torch.randn(30, 8))

    class Bare(pep.PepSearch):
        def __init__(self):  # only what count_kept reads
            self.originals, self.thresholds, self.scratch = {"v": v, "w": v[:3]}, {"v": soft}, None

    with torch.no_grad():
        v[0] = soft.threshold()[0]  # |V| = threshold exactly: cut (the threshold keeps only what exceeds it)
    search = Bare()
    assert int(search.count_kept("v")) == int((v.abs() > soft.threshold()).sum())
    shared = pep.SoftThreshold((1, 1), init=-1.0)
    search.thresholds["w"] = shared  # a shared s, and a tensor smaller than the scratch
    assert int(search.count_kept("w")) == int((v[:3].abs() > shared.threshold()).sum())
