"""PEP: soft threshold, recording at the targets, retraining from the initial weights."""
from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import recbole_lth
from recbole_lth import methods
from recbole_lth.api import prepare, settings_for
from recbole_lth.core import checkpoint, paths
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.masking import table_axes
from recbole_lth.core.pruning import kept_count
from recbole_lth.engine.run import TicketHook
from recbole_lth.methods import pep

from conftest import QUICK, trace_pep_records

# The paper's pressure (L2 on s only), with thresholds that start near zero and
# rise fast enough to reach 0.5 within one epoch.
FAST = {"pep_init": -6.0, "pep_lr": 0.3, "pep_weight_decay": 1e-3, "pep_pressure": "l2"}


# ------------------------------------------------------------------ soft threshold
def test_soft_threshold_with_very_negative_s_is_identity():
    v = torch.randn(50, 8)
    soft = pep.SoftThreshold((1, 1), init=-200.0)
    assert torch.equal(soft(v), v)


@pytest.mark.parametrize(
    "granularity, axis, expected",
    [
        ("global", 0, (1, 1)),
        ("dimension", 0, (1, 8)),
        ("feature", 0, (30, 1)),
        ("feature_dimension", 0, (30, 8)),
        ("dimension", 1, (30, 1)),  # Linear (h, n_items): items are columns
        ("feature", 1, (1, 8)),
    ],
)
def test_threshold_shape_and_cut(granularity, axis, expected):
    assert pep.threshold_shape((30, 8), granularity, axis) == expected
    torch.manual_seed(0)
    v = torch.randn(30, 8, requires_grad=True)
    soft = pep.SoftThreshold(expected, init=0.0)
    with torch.no_grad():
        soft.s.copy_(torch.randn(expected) - 1.0)
    out = soft(v)
    g = torch.sigmoid(soft.s).expand_as(v)
    kept = v.abs() > g
    assert 0 < int(kept.sum()) < v.numel()
    assert torch.equal(out == 0, ~kept)
    assert torch.allclose(out[kept], (torch.sign(v) * (v.abs() - g))[kept])
    out.sum().backward()
    # The paper's sub-gradient (Eq. 11): 1 where the weight survives, 0 where it is cut.
    assert torch.equal(v.grad, kept.float())
    assert soft.s.grad is not None and soft.s.grad.shape == expected


def test_the_feature_axis_is_the_item_side():
    class Toy(nn.Module):
        n_items = 40

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(40, 8)
            self.encoder = nn.Linear(40, 8)
            self.decoder = nn.Linear(8, 40)

    toy = Toy()
    axes = table_axes(toy, ["emb.weight", "encoder.weight", "decoder.weight"])
    assert axes == {"emb.weight": ("item", 0), "encoder.weight": ("item", 1), "decoder.weight": ("item", 0)}


def test_checks():
    base = {"model": "BPR", "dataset": "ml-100k", "method": "pep"}
    for key, bad in [
        ("pep_granularity", "row"), ("pep_init", "low"), ("target_sparsities", [0.5, 1.0]),
        ("target_sparsities", []), ("pep_lr", 0), ("pep_weight_decay", -1),
    ]:
        with pytest.raises(ConfigError) as err:
            settings_for(config_dict={**base, key: bad})
        assert err.value.key == key
    settings_for(config_dict=base)


# ------------------------------------------------------------------ search + retrain
class StartWeights(TicketHook):
    """Records each ticket's weights as training starts (mask already applied)."""

    def __init__(self):
        self.starts = []

    def attach(self, run, trainer):
        self.starts.append(
            ({n: p.detach().clone() for n, p in run.prunable.items()}, {n: m.clone() for n, m in trainer.mask.masks.items()})
        )


def test_bpr_search_records_exact_masks_and_rewinds(tmp_path, monkeypatch):
    targets = [0.5, 0.7]
    settings = {**QUICK, **FAST, "target_sparsities": targets, "run_dir": str(tmp_path / "run"), "learning_rate": 0.01}

    # Host-side trajectory of the search's nonzero count (the test may sync; the hook must not).
    trajectory = []
    record = pep.PepSearch.record

    def traced(self):
        record(self)
        trajectory.append(sum(int((self.margin(n) > 0).sum()) for n in self.originals))

    monkeypatch.setattr(pep.PepSearch, "record", traced)
    run = prepare(model="BPR", dataset="ml-100k", method="pep", config_dict=settings)
    starts = StartWeights()
    run.ticket_hooks.append(starts)
    methods.get("pep").plan(run)

    total = sum(p.numel() for p in run.prunable.values())
    meta = paths.read_json(run.paths.search_summary("pep"))
    assert meta["stopped_early"] and meta["search_epochs"] == 1  # both targets within the first epoch
    init = run.init_state()
    for target, entry, row, (weights, masks) in zip(targets, meta["targets"], run.rows, starts.starts):
        keep = kept_count(total, target)
        # Recorded at the first step whose nonzero count reached the target's, with exactly `keep` kept.
        first = next(step for step, nonzero in enumerate(trajectory) if nonzero <= keep)
        assert entry["reached"] and entry["search_step"] == first > 0
        assert entry["pep_sparsity"] == pytest.approx(1 - trajectory[first] / total, abs=1e-6)
        assert row["active_params"] == keep and row["ticket"] == f"pep_{target!r}"
        assert row["search_step"] == first and row["search_seconds"] == meta["search_seconds"]
        assert row["test_recall@20"] > 0.02  # trained: a random ranking is ~0.012
        # Retraining starts from the saved initial values, masked.
        for name in run.prunable:
            assert torch.equal(weights[name], init[name] * masks[name])
    # The search ran on a copy: the run's model holds no threshold.
    assert not any("parametrizations" in n for n, _ in run.model.named_parameters())

    # Resume: nothing is searched or trained again, the rows are the same.
    monkeypatch.setattr(pep.PepSearch, "fit", lambda self: pytest.fail("search repeated"))
    again = recbole_lth.run(model="BPR", dataset="ml-100k", method="pep", config_dict=settings)
    assert again.rows == run.rows


def test_unreached_target_is_noted_not_trained(quick_run):
    result = quick_run("BPR", "pep", epochs=1, target_sparsities=[0.99], pep_init=-10.0, pep_lr=1e-4)
    rows = list(csv.DictReader(open(result.results_csv)))
    assert len(rows) == 1 and rows[0]["note"].startswith("not reached")
    # The note names the cause: 1 epoch ends the search long before the 20-epoch schedule.
    assert "epochs (1, the search's limit) ends the search before pep_schedule_epochs (20)" in rows[0]["note"]
    assert rows[0].get("test_recall@20") in (None, "")
    assert not (result.run_dir / "tickets").exists()
    assert "not reached" in (result.run_dir / "run.log").read_text()


@pytest.mark.parametrize("model", ["LightGCN", "NeuMF", "MultiVAE", "CDAE"])
def test_backbones_search_and_retrain(quick_run, model):
    # The autoencoders step once per batch of users: small batches give several steps per epoch.
    batch = {"train_batch_size": 32} if model in ("MultiVAE", "CDAE") else {}
    result = quick_run(model, "pep", epochs=1, target_sparsities=[0.5], **batch, **FAST)
    (row,) = result.rows
    assert row["sparsity"] == pytest.approx(0.5, abs=1e-6)
    # Crossed during the search (not by the initial thresholds), at or past the target.
    assert row["search_step"] >= 1 and row["pep_sparsity"] >= 0.5
    # The retrained ticket is the recorded mask, and its pruned weights stay exactly zero.
    searched = checkpoint.load(result.run_dir / "search" / "pep.pt")["masks"]
    ticket = checkpoint.load(result.run_dir / "tickets" / "pep_0.5" / "ticket.pt")
    for name, mask in ticket["masks"].items():
        assert torch.equal(mask, searched[f"0/{name}"])
        assert torch.all(ticket["state_dict"][name][~mask] == 0)
    assert row["nonzero_params"] <= row["active_params"] == kept_count(row["prunable_params"], 0.5)


# ------------------------------------------------ O(batch) search, bookkeeping
def _search_state(run, **options):
    search = pep.PepSearch(run, [0.3, 0.5], **options)
    result = search.fit()
    return search, result


def test_gathered_search_and_cheap_bookkeeping_match_the_full_table_search(tmp_path, monkeypatch):
    settings = {**QUICK, **FAST, "epochs": 1, "run_dir": str(tmp_path / "run")}
    run = prepare(model="BPR", dataset="ml-100k", method="pep", config_dict=settings)

    _, reference = trace_pep_records(monkeypatch)
    full, full_result = _search_state(run, gathered=False, host_check=False)
    assert full.gathered == []
    # Gathering alone is exact: with s trained by the dense Adam (row_sparse off), as the whole table's.
    for options in ({"gathered": True, "host_check": True}, {"gathered": True, "host_check": False}):
        options["row_sparse"] = False
        fast, fast_result = _search_state(run, **options)
        assert fast.gathered == ["user_embedding.weight", "item_embedding.weight"]
        for name in full.originals:  # same V and s after the same steps
            torch.testing.assert_close(fast.originals[name], full.originals[name], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(fast.thresholds[name].s, full.thresholds[name].s, rtol=1e-5, atol=1e-6)
        assert [e["search_step"] for e in fast_result["meta"]["targets"]] == \
            [e["search_step"] for e in full_result["meta"]["targets"]]
        assert fast_result["masks"].keys() == full_result["masks"].keys() and len(fast_result["masks"]) == 4
        for key, mask in fast_result["masks"].items():
            assert torch.equal(mask, full_result["masks"][key]), key
        for t, target in enumerate([0.3, 0.5]):  # and both are the literal reference's masks
            ref = reference[id(fast)][t]
            expected = pruning_keep(ref, target)
            got = torch.cat([fast_result["masks"][f"{t}/{n}"].flatten() for n in fast.originals])
            assert torch.equal(got, expected)


def pruning_keep(margins, target):
    from recbole_lth.core.pruning import keep_top

    return keep_top({"m": margins}, {"m": torch.ones_like(margins, dtype=torch.bool)}, target)["m"]


def test_scheduled_pressure_reaches_high_targets_on_tiny_data(tiny_data, tmp_path):
    data_path, dataset = tiny_data
    targets = [0.5, 0.9, 0.95]
    result = recbole_lth.run(model="BPR", dataset=dataset, method="pep", config_dict={
        **QUICK, "data_path": data_path, "epochs": 12, "train_batch_size": 64, "pep_schedule_epochs": 4,
        "target_sparsities": targets, "output_root": str(tmp_path / "runs")})
    rows = {r["ticket"]: r for r in result.rows}
    meta = paths.read_json(result.run_dir / "search" / "pep.json")
    assert meta["pressure"] == "schedule" and meta["stopped_early"]
    # Every target is reached within the schedule (plus the epoch that notices), in order.
    assert meta["search_epochs"] <= 5
    steps = [rows[f"pep_{t!r}"]["search_step"] for t in targets]
    assert steps == sorted(steps) and steps[0] > 0
    for t in targets:
        row = rows[f"pep_{t!r}"]
        assert row["sparsity"] == pytest.approx(t, abs=1e-3) and row["pep_sparsity"] >= t
    # The paper's pressure alone stalls far below 0.95 on the same data (its L2 pulls s to 0).
    stalled = recbole_lth.run(model="BPR", dataset=dataset, method="pep", config_dict={
        **QUICK, "data_path": data_path, "epochs": 5, "train_batch_size": 64, "pep_pressure": "l2",
        "target_sparsities": [0.95], "output_root": str(tmp_path / "runs")})
    assert stalled.rows[0]["note"].startswith("not reached")


def test_short_schedule_names_what_to_raise():
    keys = {"pep_pressure": "schedule", "pep_schedule_epochs": 20, "target_sparsities": [0.75, 0.99]}
    # 15 of 20 epochs: the ramp is at 0.9925 · 0.75³ = 0.419 when the search ends.
    assert "scheduled sparsity at 0.419; raise epochs to at least 21" in pep.short_schedule(keys, 15)
    assert pep.short_schedule(keys, 20) is None
    assert pep.short_schedule({**keys, "pep_pressure": "l2"}, 15) is None
    meta = {"search_epochs": 30, "final_sparsity": 0.6}
    assert pep.unreached_note({**keys, "pep_pressure": "l2"}, 30, meta).endswith("or use pep_pressure: schedule")
    assert pep.unreached_note(keys, 30, meta).endswith("raise epochs (the search's limit)")


def test_scheduled_sparsity_prunes_mostly_late():
    assert pep.scheduled_sparsity(0, 100, 0.9) == 0.0
    assert pep.scheduled_sparsity(50, 100, 0.9) == pytest.approx(0.9 * 0.5 ** 3)
    assert pep.scheduled_sparsity(100, 100, 0.9) == pep.scheduled_sparsity(500, 100, 0.9) == 0.9
