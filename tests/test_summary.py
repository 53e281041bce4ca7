"""Statistics over seeds (summary.py) and compare's seed groups, on rows written by hand.

The expected numbers are worked out by hand, with t_{0.975,2} = 4.302653 and
t_{0.975,1} = 12.706205; for 2 degrees of freedom the two-sided p of a t
statistic is 1 - t / sqrt(2 + t^2).
"""
import csv
import math

import pytest

from recbole_lth.core import paths
from recbole_lth.views import compare, summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_975_DF2 = 4.302653
T_975_DF1 = 12.706205


def _row(ticket, method, target, sparsity, recall20, **extra):
    return {"method": method, "ticket": ticket, "target_sparsity": target, "sparsity": sparsity,
            "nonzero_params": 100, "prunable_params": 1000, "test_recall@20": recall20, **extra}


def _seed(seed):
    """One seed's rows: dense 0.40/0.42/0.44 and tickets at fixed Δs from it."""
    dense = 0.40 + 0.02 * seed
    return [
        _row("dense", "dense", 0.0, 0.0, dense, nonzero_params=1000, **{
            "test_recall@10": (0.20, 0.22, None)[seed], "test_ndcg@20": 0.20 + 0.01 * seed}),
        # Δ 0.01, 0.02, 0.03: mean 0.02, sd 0.01, CI 0.02 ± 4.302653 * 0.01 / sqrt(3) contains 0.
        _row("omp_0.5", "omp", 0.5, (0.49, 0.50, 0.51)[seed], dense + (0.01, 0.02, 0.03)[seed]),
        # Δ 0.05, 0.06, 0.07: the CI lies above 0; NDCG Δ -0.01, 0, 0.01; Recall@10 pairs in 2 seeds.
        _row("omp_0.8", "omp", 0.8, 0.8, dense + (0.05, 0.06, 0.07)[seed], **{
            "test_recall@10": (0.21, 0.25, 0.40)[seed], "test_ndcg@20": 0.19 + 0.02 * seed}),
        # Δ -0.05, -0.06, -0.07: the CI lies below 0.
        _row("omp_0.9", "omp", 0.9, 0.9, dense - (0.05, 0.06, 0.07)[seed]),
        # Δ 0.01 in every seed: sd 0, a point CI and no p.
        _row("imp_round_01", "imp", 0.2, 0.2, dense + 0.01),
        # PEP never reached this target: no metric in any seed.
        _row("pep_0.99", "pep", 0.99, None, None, note="target not reached"),
        # No weight left: the metric says nothing about the method.
        _row("omp_0.999", "omp", 0.999, 1.0, 0.05, nonzero_params=0),
    ]


def _three_seeds():
    rows = {seed: _seed(seed) for seed in (0, 1, 2)}
    # Only seed 1 has this ticket, listed first there: it still comes after seed 0's tickets.
    rows[1].insert(0, _row("pep_0.95", "pep", 0.95, 0.95, 0.40))
    return rows


@pytest.fixture
def rows():
    return {r["ticket"]: r for r in summary.summarize(_three_seeds(), "recall@20")}


def test_tickets_in_first_seen_order_with_their_counts(rows):
    assert list(rows) == ["dense", "omp_0.5", "omp_0.8", "omp_0.9", "imp_round_01", "pep_0.99", "omp_0.999",
                          "pep_0.95"]
    assert [rows[t]["n"] for t in rows] == [3, 3, 3, 3, 3, 0, 3, 1]
    assert rows["omp_0.5"]["sparsity_mean"] == pytest.approx(0.50)
    assert rows["omp_0.5"]["verdict_metric"] == "test_recall@20"


def test_mean_std_and_paired_delta_worked_by_hand(rows):
    tie = rows["omp_0.5"]
    assert tie["test_recall@20_mean"] == pytest.approx(0.44)  # 0.41, 0.44, 0.47
    assert tie["test_recall@20_std"] == pytest.approx(0.03)
    assert tie["test_recall@20_delta"] == pytest.approx(0.02)
    assert tie["test_recall@20_rel_delta"] == pytest.approx(0.02 / 0.42)  # mean Δ / mean dense
    half = T_975_DF2 * 0.01 / math.sqrt(3)  # 0.0248414
    assert tie["test_recall@20_ci_low"] == pytest.approx(0.02 - half, abs=1e-6)
    assert tie["test_recall@20_ci_high"] == pytest.approx(0.02 + half, abs=1e-6)
    t = 0.02 / (0.01 / math.sqrt(3))  # 3.4641
    assert tie["test_recall@20_p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-6)  # 0.07418
    assert tie["verdict"] == "tie"


def test_winning_and_losing_need_the_whole_interval_on_one_side(rows):
    win, lose = rows["omp_0.8"], rows["omp_0.9"]
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert win["test_recall@20_ci_low"] == pytest.approx(0.06 - half, abs=1e-6)  # 0.0352 > 0
    assert lose["test_recall@20_ci_high"] == pytest.approx(-0.06 + half, abs=1e-6)  # -0.0352 < 0
    t = 0.06 / (0.01 / math.sqrt(3))
    assert win["test_recall@20_p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-6)  # 0.00913
    assert lose["test_recall@20_p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-6)
    assert (win["verdict"], lose["verdict"]) == ("winning", "losing")


def test_every_test_metric_gets_its_paired_statistics(rows):
    win = rows["omp_0.8"]
    # NDCG Δ -0.01, 0, 0.01: a tie there, but the verdict is on Recall@20.
    assert win["test_ndcg@20_delta"] == pytest.approx(0.0, abs=1e-12)
    assert win["test_ndcg@20_ci_high"] == pytest.approx(T_975_DF2 * 0.01 / math.sqrt(3), abs=1e-6)
    # Recall@10: the dense row of seed 2 has none, so only seeds 0 and 1 pair (Δ 0.01, 0.03).
    assert win["test_recall@10_mean"] == pytest.approx((0.21 + 0.25 + 0.40) / 3)
    assert win["test_recall@10_delta"] == pytest.approx(0.02)
    assert win["test_recall@10_rel_delta"] == pytest.approx(0.02 / 0.21)
    half = T_975_DF1 * math.sqrt(2) * 0.01 / math.sqrt(2)  # sd of (0.01, 0.03) = 0.01414
    assert win["test_recall@10_ci_low"] == pytest.approx(0.02 - half, abs=1e-6)
    assert rows["omp_0.5"]["test_recall@10_mean"] is None  # the ticket has no Recall@10


def test_identical_deltas_give_a_point_interval_and_no_p(rows):
    point = rows["imp_round_01"]
    assert point["test_recall@20_ci_low"] == point["test_recall@20_ci_high"] == pytest.approx(0.01)
    assert point["test_recall@20_p"] is None
    assert point["verdict"] == "winning"


def test_reference_one_seed_no_metric_and_empty(rows):
    dense = rows["dense"]
    assert dense["verdict"] == "reference" and dense["test_recall@20_delta"] is None
    assert dense["test_recall@20_mean"] == pytest.approx(0.42)
    one = rows["pep_0.95"]
    assert one["verdict"] == "one seed" and one["test_recall@20_std"] is None
    assert one["test_recall@20_delta"] == pytest.approx(0.40 - 0.42)  # against seed 1's dense only
    assert one["test_recall@20_ci_low"] is None and one["test_recall@20_p"] is None
    missing = rows["pep_0.99"]
    assert missing["verdict"] == "no metric" and missing["test_recall@20_mean"] is None
    assert missing["test_recall@20_delta"] is None
    assert rows["omp_0.999"]["verdict"] == "empty"


def test_no_dense_in_any_seed():
    seed_rows = {seed: [r for r in _seed(seed) if r["ticket"] != "dense"] for seed in (0, 1)}
    rows = {r["ticket"]: r for r in summary.summarize(seed_rows, "recall@20")}
    assert rows["omp_0.8"]["verdict"] == "no dense"
    assert rows["omp_0.8"]["test_recall@20_delta"] is None
    assert rows["omp_0.8"]["test_recall@20_mean"] == pytest.approx((0.45 + 0.48) / 2)


def test_write_summary_files(tmp_path):
    out = summary.write_summary(tmp_path, _three_seeds(), "recall@20", "BPR on ml-100k")
    study = paths.StudyPaths(tmp_path)
    assert out == study.summary_md
    text = out.read_text()
    assert "Seeds: 0, 1, 2" in text and "paired t test (scipy.stats.ttest_rel)" in text.lower()
    assert "small n, wide intervals" in text
    assert "`imp_round_01`: the CI is the point [Δ, Δ]" in text
    tie = next(line for line in text.splitlines() if line.startswith("| omp | omp_0.5 |"))
    assert tie == "| omp | omp_0.5 | 0.5 | 3 | 0.44 ± 0.03 | 0.02 | +4.8% | [-0.004841, 0.04484] | 0.07418 | tie |"
    assert "## Every test metric" in text
    with open(study.summary_csv, newline="") as f:
        written = list(csv.DictReader(f))
    columns = list(written[0])
    assert columns[:6] == ["method", "ticket", "target_sparsity", "n", "n_paired", "sparsity_mean"]
    assert columns[-2:] == ["verdict_metric", "verdict"]
    for metric in ("test_recall@20", "test_recall@10", "test_ndcg@20"):
        assert [c for c in columns if c.startswith(metric + "_")] == [
            f"{metric}_{s}" for s in ("mean", "std", "delta", "rel_delta", "ci_low", "ci_high", "p")]
    assert [r["verdict"] for r in written][:4] == ["reference", "tie", "winning", "losing"]
    assert written[5]["test_recall@20_mean"] == ""  # pep_0.99: n = 0, empty stats
    assert study.curve.read_bytes().startswith(PNG_MAGIC)
    assert r"\toprule" in study.summary_tex.read_text()


def test_curve_draws_each_method_with_its_band(monkeypatch, tmp_path):
    drawn = {}
    monkeypatch.setattr(summary, "plot_mean_bands", lambda path, series, bands, metric, title: drawn.update(
        series=series, bands=bands, metric=metric))
    summary.write_curve(tmp_path / "c.png", summary.summarize(_three_seeds(), "recall@20"), "t")
    series = dict(drawn["series"])
    assert list(series) == ["omp (mean ± std over 3 seeds)", "imp (mean ± std over 3 seeds)",
                            "pep (mean ± std over 1 seed)"]
    omp = series["omp (mean ± std over 3 seeds)"]
    assert [x for x, _, _ in omp] == [0.5, 0.8, 0.9, 0.999]
    assert omp[0][1:] == pytest.approx((0.44, 0.03))
    (label, mean, std), = drawn["bands"]
    assert label == "dense (mean ± std over 3 seeds)" and (mean, std) == pytest.approx((0.42, 0.02))
    assert drawn["metric"] == "test_recall@20"


def _tex_seed(seed):
    return [
        _row("omp_0.5", "omp", 0.5, 0.5, (0.33, 0.35)[seed]),
        _row("omp_0.9", "omp", 0.9, 0.9, (0.20, 0.22)[seed]),
        _row("dense", "dense", 0.0, 0.0, (0.30, 0.32)[seed]),
        _row("dense_wd_0.0", "dense", 0.0, 0.0, 0.90),  # a candidate, not a method's row
        _row("rp_0.5", "rp", 0.5, 0.5, 0.32),
        _row("rp_0.8", "rp", 0.8, 0.8, (0.25, 0.27)[seed]),
    ]


def test_tex_table_dense_first_best_bold_second_underlined():
    rows = summary.summarize({0: _tex_seed(0), 1: _tex_seed(1)}, "recall@20")
    tex = summary.summary_latex(rows, [0, 1])
    lines = tex.splitlines()
    assert r"\toprule" in lines and r"\midrule" in lines and r"\bottomrule" in lines
    assert r"\begin{tabular}{lccc}" in lines
    assert "test Recall@20 (mean$\\pm$std over seeds 0, 1)" in tex
    body = lines[lines.index(r"\toprule") + 1:lines.index(r"\bottomrule")]
    # Means: dense 0.31 everywhere; omp 0.34 at 0.5, 0.21 at 0.9; rp 0.32 at 0.5, 0.26 at 0.8.
    assert body == [
        r"Method & 0.5 & 0.8 & 0.9 \\",
        r"\midrule",
        r"dense & 0.3100$\pm$0.0141 & \textbf{0.3100$\pm$0.0141} & \textbf{0.3100$\pm$0.0141} \\",
        r"omp & \textbf{0.3400$\pm$0.0141} & -- & \underline{0.2100$\pm$0.0141} \\",
        r"rp & \underline{0.3200$\pm$0.0000} & \underline{0.2600$\pm$0.0141} & -- \\",
    ]


def _run_dir(root, name, seed, learning_rate, deltas):
    run_dir = root / name
    run_paths = paths.RunPaths(run_dir)
    dense = 0.30 + 0.01 * seed
    paths.write_csv(run_paths.results, [
        _row("dense", "dense", 0.0, 0.0, dense, nonzero_params=1000),
        _row("omp_0.5", "omp", 0.5, 0.5, dense + deltas),
    ])
    paths.write_json(run_paths.settings, {
        "model": "BPR", "dataset": "ml-100k", "method": "omp", "target_sparsities": [0.5], "seed": seed,
        "learning_rate": learning_rate, "valid_metric": "recall@20", "run_dir": str(run_dir),
        "output_root": str(root), "state": "WARNING"})
    return run_dir


def test_compare_groups_runs_that_differ_only_in_seed(tmp_path):
    a = _run_dir(tmp_path, "a", 1, 0.001, 0.01)
    b = _run_dir(tmp_path, "b", 2, 0.001, 0.03)
    c = _run_dir(tmp_path, "c", 3, 0.01, 0.05)
    out = tmp_path / "cmp"
    text = compare.compare([a, b, c], out).read_text()
    assert "| c |  |  | dense, omp | 2 | own: ticket `dense` |" in text  # every run is still compared
    section = text[text.index("## Seed groups"):]
    assert "### Group 1" in section and "### Group 2" not in section
    assert "| a | 1 |" in section and "| b | 2 |" in section and "| c |" not in section
    with open(out / "comparison_summary.csv", newline="") as f:
        written = {r["ticket"]: r for r in csv.DictReader(f)}
    assert set(written) == {"dense", "omp_0.5"} and written["omp_0.5"]["group"] == "1"
    assert written["omp_0.5"]["n"] == "2"
    assert float(written["omp_0.5"]["test_recall@20_delta"]) == pytest.approx(0.02)  # Δ 0.01 and 0.03
    # sd 0.01414, t = 0.02 / (0.01414 / sqrt(2)) = 2; for 1 degree of freedom p = 1 - 2 atan(t) / pi.
    assert float(written["omp_0.5"]["test_recall@20_ci_low"]) == pytest.approx(0.02 - T_975_DF1 * 0.01, abs=1e-6)
    assert float(written["omp_0.5"]["test_recall@20_p"]) == pytest.approx(1 - 2 * math.atan(2.0) / math.pi, abs=1e-6)
    assert written["omp_0.5"]["verdict"] == "tie"


def test_compare_without_a_seed_group_writes_no_summary(tmp_path):
    a = _run_dir(tmp_path, "a", 1, 0.001, 0.01)
    c = _run_dir(tmp_path, "c", 2, 0.01, 0.05)  # another seed, but also another learning rate
    out = tmp_path / "cmp"
    text = compare.compare([a, c], out).read_text()
    assert "Seed groups" not in text and not (out / "comparison_summary.csv").exists()


def _ctr_seeds():
    """Three seeds of a CTR study: AUC and LogLoss by hand, non-zero weights fixed by the target."""
    def row(ticket, method, target, nonzero, auc, logloss):
        return {"method": method, "ticket": ticket, "target_sparsity": target, "sparsity": target,
                "nonzero_params": nonzero, "prunable_params": 1000, "test_auc": auc, "test_logloss": logloss}
    return {seed: [row("dense", "dense", 0.0, 1000, 0.80 + 0.01 * seed, 0.40),
                   # listed sparsest first: the line is drawn in order of weights
                   row("pep_0.99", "pep", 0.99, 10, 0.70 + 0.01 * seed, 0.50),
                   row("pep_0.9", "pep", 0.9, 100, (0.78, 0.79, 0.83)[seed], 0.45),
                   row("omp_0.9", "omp", 0.9, 100, 0.75, 0.46),
                   row("omp_1.0", "omp", 1.0, 0, 0.5, 0.69)]  # empty: no point on a log axis
            for seed in (0, 1, 2)}


def test_frontier_points_are_means_with_their_t_interval():
    rows = summary.summarize(_ctr_seeds(), "auc")
    lines, reference = summary.frontier_points(rows, "test_auc")
    assert [method for method, _ in lines] == ["pep", "omp"]
    pep = dict(lines)["pep"]
    assert [weights for weights, *_ in pep] == [10, 100]
    half = T_975_DF2 * math.sqrt(((0.78 - 0.8) ** 2 + (0.79 - 0.8) ** 2 + (0.83 - 0.8) ** 2) / 2) / math.sqrt(3)
    assert pep[1] == pytest.approx((100, 0.80, 0.80 - half, 0.80 + half))
    (omp,) = dict(lines)["omp"]
    assert omp == pytest.approx((100, 0.75, 0.75, 0.75))  # sd 0: a point interval
    label, weights, mean, low, high = reference
    assert (label, weights) == ("dense", 1000) and mean == pytest.approx(0.81)
    assert high - mean == pytest.approx(T_975_DF2 * 0.01 / math.sqrt(3))
    one_seed = summary.summarize({0: _ctr_seeds()[0]}, "auc")
    assert dict(summary.frontier_points(one_seed, "test_auc")[0])["pep"][1] == pytest.approx((100, 0.78, 0.78, 0.78))


def test_frontier_panels_are_the_verdict_metric_and_logloss(monkeypatch, tmp_path):
    drawn = {}
    monkeypatch.setattr(summary, "plot_frontier", lambda path, panels, title: drawn.update(panels=panels))
    summary.write_frontier(tmp_path / "f.png", summary.summarize(_ctr_seeds(), "auc"), "t")
    assert [panel[0] for panel in drawn["panels"]] == ["test_auc", "test_logloss"]
    # full sort: Recall@20 alone, not its @K siblings
    summary.write_frontier(tmp_path / "f.png", summary.summarize(_three_seeds(), "recall@20"), "t")
    assert [panel[0] for panel in drawn["panels"]] == ["test_recall@20"]


def test_write_summary_draws_the_frontier(tmp_path):
    summary.write_summary(tmp_path, _ctr_seeds(), "auc", "FM on a CTR table")
    study = paths.StudyPaths(tmp_path)
    assert study.frontier.read_bytes().startswith(PNG_MAGIC)
    assert "](frontier.png)" in study.summary_md.read_text()
    with open(study.summary_csv, newline="") as f:
        assert [float(r["nonzero_mean"]) for r in csv.DictReader(f)] == [1000, 10, 100, 100, 0]


def test_frontier_colours_follow_the_method_in_every_figure():
    from recbole_lth.views import plots

    plt = plots._pyplot()
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pep, omp_variant, other = plots._method_colors(plt, ["pep", "omp [long]", "PEP-0 (paper)"])
    assert (pep, omp_variant) == (palette[2], palette[0])  # whichever other methods the figure has
    assert plots._method_colors(plt, ["omp", "rp", "pep"])[2] == pep
    assert other not in {pep, omp_variant}
