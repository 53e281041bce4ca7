"""Studies: several methods in one run on one dense model."""
import csv

import pytest
import torch

from recbole_lth import api
from recbole_lth.core.errors import ConfigError


def test_a_study_trains_one_dense_ticket_and_judges_every_row(quick_run, trained_keys):
    methods = ["imp", "omp", "rp", "dsl", "pep", "small_dense"]
    result = quick_run("BPR", methods, epochs=1, rounds=2, target_sparsities="imp", learning_rate=0.01,
                       pep_schedule_epochs=0.5, dsl_update_epochs=0.25)
    assert trained_keys.count("dense") == 1
    rows = list(csv.DictReader(open(result.results_csv)))
    # IMP's points 0.2 and 0.36, and every other method at exactly those.
    expected = ["dense", "imp_round_01", "imp_round_02"] + [f"{m}_{t}" for m in methods[1:] for t in (0.2, 0.36)]
    assert [r["ticket"] for r in rows] == expected
    assert [r["method"] for r in rows] == ["dense", "imp", "imp"] + [m for m in methods[1:] for _ in (0, 1)]
    for row in rows[1:]:
        sparsity, target = float(row["sparsity"]), float(row["target_sparsity"])
        if row["method"] == "small_dense":  # whole widths: ⌈16·(1-s)⌉ of 16
            assert target - 1 / 16 < sparsity <= target
        else:
            assert sparsity == pytest.approx(target, abs=1e-4), row["ticket"]
    report = (result.run_dir / "report.md").read_text()
    verdicts = [line for line in report.splitlines() if line.startswith("| ") and "%" in line
                and "(reference)" not in line]
    assert len(verdicts) == len(rows) - 1  # every sparse row has a Δ ...
    assert all(("**yes**" in line) != ("| no |" in line) for line in verdicts)  # ... and a verdict
    assert "Dense reference: ticket `dense`" in report
    assert result.run_dir.name.startswith("BPR-ml-100k-imp+omp+rp+dsl+pep+small_dense-")


def test_each_method_of_a_study_trains_with_its_own_defaults():
    merged, views = api.settings_for("BPR", "ml-100k", ["imp", "imp_kd", "dsl"])
    assert views["imp"]["kd_weight"] == 0 and views["imp_kd"]["kd_weight"] == 1.0
    assert "dsl_grow" in views["dsl"] and views["dsl"]["method"] == "dsl"
    assert merged["method"] == ["imp", "imp_kd", "dsl"]
    # A key the user sets reaches every method.
    _, views = api.settings_for("BPR", "ml-100k", ["imp", "imp_kd"], config_dict={"kd_weight": 0.5})
    assert views["imp"]["kd_weight"] == views["imp_kd"]["kd_weight"] == 0.5


@pytest.mark.parametrize("method", [["imp", "imp"], [], ["imp", "nope"], [1]])
def test_bad_study_lists_are_refused(method):
    with pytest.raises(ConfigError) as err:
        api.settings_for("BPR", "ml-100k", method)
    assert err.value.key == "method"


def test_a_one_method_list_is_that_method():
    merged, views = api.settings_for("BPR", "ml-100k", ["dsl"])
    assert merged["method"] == "dsl" and list(views) == ["dsl"]
    assert api.default_run_dir(merged) == api.default_run_dir(api.settings_for("BPR", "ml-100k", "dsl")[0])


def test_target_sparsities_imp_needs_a_pruned_round():
    _, views = api.settings_for("BPR", "ml-100k", "omp", config_dict={"target_sparsities": "imp", "rounds": 3})
    assert views["omp"]["target_sparsities"] == [0.2, 0.36, 0.488]
    with pytest.raises(ConfigError, match="target_sparsities"):
        api.settings_for("BPR", "ml-100k", "omp", config_dict={"target_sparsities": "imp", "rounds": 0})


def test_dense_weight_decays_make_the_best_on_validation_the_reference(quick_run, trained_keys):
    from recbole_lth.core import checkpoint

    result = quick_run("BPR", "omp", epochs=2, target_sparsities=[0.5], dense_weight_decays=[0, 0.5])
    rows = {r["ticket"]: r for r in csv.DictReader(open(result.results_csv))}
    assert list(rows) == ["dense_wd_0.0", "dense_wd_0.5", "dense", "omp_0.5"]
    assert trained_keys == ["dense_wd_0.0", "dense_wd_0.5", "omp_0.5"]  # the reference is not trained again
    assert [float(rows[k]["weight_decay"]) for k in ("dense_wd_0.0", "dense_wd_0.5")] == [0, 0.5]
    # A weight decay of 0.5 all but erases BPR's tables: the undecayed candidate is the best on validation.
    best, other = "dense_wd_0.0", "dense_wd_0.5"
    assert float(rows[best]["valid_recall@20"]) > float(rows[other]["valid_recall@20"])
    assert rows["dense"]["valid_recall@20"] == rows[best]["valid_recall@20"]
    assert rows["dense"]["test_recall@20"] == rows[best]["test_recall@20"] and best in rows["dense"]["note"]
    weights = [checkpoint.load(result.run_dir / "tickets" / k / "ticket.pt")["state_dict"] for k in ("dense", best)]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])
    assert "weight_decay 0 (dense_wd_0.0)" in rows["dense"]["note"]
    report = (result.run_dir / "report.md").read_text()
    assert report.count("(dense candidate)") == 2 and "Dense reference: ticket `dense`" in report
    # omp prunes the chosen dense model: the ticket row's sparsity is exact and it was judged.
    assert float(rows["omp_0.5"]["sparsity"]) == pytest.approx(0.5, abs=1e-4)


def test_dense_weight_decays_are_checked():
    for bad in ([], [0, 0.0], [-1], "0.1"):
        with pytest.raises(ConfigError) as err:
            api.settings_for("BPR", "ml-100k", "omp", config_dict={"dense_weight_decays": bad})
        assert err.value.key == "dense_weight_decays"
    with pytest.raises(ConfigError) as err:
        api.settings_for("BPR", "ml-100k", "imp", config_dict={"dense_weight_decays": [0, 1e-4], "rewind_epoch": 1})
    assert err.value.key == "rewind_epoch"
