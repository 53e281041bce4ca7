import csv


def test_imp_two_rounds_writes_results(quick_run):
    result = quick_run("BPR", "imp", rounds=2)
    rows = list(csv.DictReader(open(result.results_csv)))
    assert [r["ticket"] for r in rows] == ["dense", "imp_round_01", "imp_round_02"]
    assert abs(float(rows[2]["sparsity"]) - 0.36) < 1e-4
