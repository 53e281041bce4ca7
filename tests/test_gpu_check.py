"""The GPU check's CPU rehearsal (what CI runs so the script cannot rot between
the rare GPU sessions), its budgets, and its energy bookkeeping on a stub counter."""
from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

TITLES = [title for title, _ in gpu_check.PARTS.values()]


def _sections(md: str) -> dict[str, str]:
    """``{title: body}`` of the report's ``##`` sections, in order."""
    parts = md.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quick_cpu_rehearsal_fills_every_section(tmp_path):
    # No wall-time assertion: on a loaded CI machine the same rehearsal took 41-75 s (issue 35).
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out),
                           "--device", "cpu", "--quick"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sections = _sections((out / "gpu_check.md").read_text())
    assert list(sections) == TITLES
    tests, parity, costs, yelp, energy, families = sections.values()
    assert "2 passed, 0 failed, 0 error, 2 skipped" in tests  # the cpu cases of the compact lookups; cuda skipped
    assert "Stored ticket masks: identical" in parity
    parity_rows = {r["ticket"]: r for r in _rows(out / "parity.csv")}
    assert set(parity_rows) == {"dense", "omp_0.5", "rp_0.5"}
    assert all(r["masks_identical"] == "True" and r["within_noise"] == "True" for r in parity_rows.values())
    figures = {(r["script"], r["model"], r["figure"]) for r in _rows(out / "costs.csv")}
    for figure in [("bench_mask_overhead", "BPR", "masked/dense"), ("bench_mask_overhead", "LightGCN", "masked/dense"),
                   ("bench_epoch_cost", "BPR", "pep/dense"), ("bench_epoch_cost", "BPR", "kd/dense"),
                   ("bench_epoch_cost", "BPR", "dsl exploration share"),
                   ("bench_epoch_cost", "BPR", "validation plugin budget / floor"),
                   ("bench_compact", "BPR", "compact 0.9 eval peak/dense")]:
        assert figure in figures
    assert "skipped" not in costs
    yelp_rows = _rows(out / "yelp2018.csv")
    assert [r["ticket"] for r in yelp_rows] == ["dense", "omp_0.5", "dsl_0.5", "pep_0.5"]
    assert all(float(r["train_seconds"]) > 0 and float(r["test_recall@20"]) > 0 for r in yelp_rows)
    # On the CPU: no NVML, and the report says so; the bookkeeping runs on the stub counter.
    assert "stub counter" in energy and "skipped: no CUDA" in energy
    energy_rows = _rows(out / "energy.csv")
    assert [r["ticket"] for r in energy_rows] == [r["ticket"] for r in yelp_rows]
    assert float(energy_rows[0]["energy_joules/dense"]) == 1.0
    # (f): a sequential and a CTR study, each with all its tickets, trained and pruned to their targets.
    family_rows = _rows(out / "families.csv")
    sasrec = {r["ticket"]: r for r in family_rows if r["model"] == "SASRec"}
    deepfm = {r["ticket"]: r for r in family_rows if r["model"] == "DeepFM"}
    assert set(sasrec) == {"dense", "omp_0.5", "rp_0.5"}
    assert set(deepfm) == {"dense"} | {f"{m}_{t}" for m in ("omp", "rp", "dsl", "pep") for t in (0.5, 0.8)}
    for key in ("omp_0.5", "rp_0.5"):
        assert float(sasrec[key]["sparsity"]) == pytest.approx(0.5, abs=1e-3)
    assert all(0 < float(r["test_recall@20"]) <= 1 and float(r["train_seconds"]) > 0 for r in sasrec.values())
    for key, row in deepfm.items():
        target = 0.0 if key == "dense" else float(key.rpartition("_")[2])
        assert float(row["sparsity"]) == pytest.approx(target, abs=1e-3), key
        assert 0 < float(row["test_auc"]) < 1 and 0 < float(row["test_logloss"]) < 5, key
        assert float(row["seconds/epoch"]) > 0 and not any(c.startswith("test_recall") and row[c] for c in row)
    assert "SASRec on gpu_check_seq" in families and "DeepFM on gpu_check_ctr" in families
    assert "| omp_0.5 | omp | 0.5 |" in families and "| pep_0.8 | pep |" in families
    assert "skipped" not in families and "failed" not in families
    assert "anomaly detection: off" in families  # else the studies time torch's debugger


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there")
def test_cuda_asked_without_cuda_skips_every_part_saying_so(tmp_path):
    md = gpu_check.main(["--out", str(tmp_path), "--device", "cuda", "--data_path", str(tmp_path)]).read_text()
    sections = _sections(md)
    assert list(sections) == TITLES
    for title, body in sections.items():
        assert "skipped: no CUDA" in body, title


def test_a_spent_budget_skips_each_part_with_a_line(tmp_path):
    md = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--budget_s", "0.5",
                         "--parts", "tests,parity,costs,yelp,families"]).read_text()
    sections = _sections(md)
    assert list(sections) == TITLES
    for body in sections.values():
        assert body.strip().startswith("skipped: the check's budget (0.5 s)"), body


def test_a_family_study_past_its_deadline_stops_before_its_first_ticket_saying_so(tmp_path):
    args = gpu_check.parse_args(["--out", str(tmp_path), "--device", "cpu", "--quick"])
    args.data_path = str(tmp_path / "data")
    gpu_check.write_quick_data(tmp_path / "data")
    study = gpu_check.sequential_study(args, tmp_path, 1)
    rows, lines = gpu_check.run_family(study, "cpu", time.perf_counter() - 1, "its share, 1 s,")
    assert rows == []
    assert "(no rows)" in lines and lines[-1] == "skipped: the tickets not listed (its share, 1 s, was spent)"


def test_deadline_stops_a_study_before_the_next_ticket():
    gpu_check.Deadline(time.perf_counter() + 60).attach(None, None)  # within its budget: nothing
    with pytest.raises(gpu_check.BudgetSpent):
        gpu_check.Deadline(time.perf_counter() - 1).attach(None, None)


class StubCounter:
    """Joules read off a list, one value per read."""

    def __init__(self, readings):
        self.readings = list(readings)

    def __call__(self):
        return self.readings.pop(0)


def test_energy_bookkeeping_on_a_stub_counter():
    meter = gpu_check.EnergyMeter(StubCounter([100.0, 110.0, 150.0, 160.0, 180.0, 250.0, 270.0]))
    rows = []
    for ticket, method in (("dense", "dense"), ("omp_0.5", "omp"), ("pep_0.5", "pep")):
        meter.attach(None, None)
        rows.append({"ticket": ticket, "method": method, "sparsity": 0.0 if method == "dense" else 0.5,
                     **meter.row_fields()})
    # Each ticket from its attach to its row; "since last" from the previous row (pep: its search too).
    assert [r["energy_joules"] for r in rows] == [40.0, 20.0, 20.0]
    assert [r["energy_since_last_joules"] for r in rows] == [50.0, 30.0, 90.0]
    relative = gpu_check.relative_to_dense(rows, "energy_joules")
    assert [r["energy_joules/dense"] for r in relative] == [1.0, 0.5, 0.5]
    lines = gpu_check.energy_lines(relative, "stub", rows)
    assert any("| pep_0.5 | pep | 0.5 | 20 | 0.5 |" == line for line in lines)
    assert gpu_check.energy_lines([], "absent: why", rows) == ["energy_joules: absent: why"]


def test_nvml_is_not_asked_on_the_cpu():
    counter, why = gpu_check.nvml_counter("cpu")
    assert counter is None and why.startswith("skipped: no CUDA")
