"""Reports, pictures, compact export and cross-run comparison."""
import csv
import logging
import os

import pytest
import torch

import recbole_lth
from recbole_lth import api, cli
from recbole_lth.core import checkpoint, paths, pruning
from recbole_lth.core.masking import ParameterMask, entity_axis
from recbole_lth.deploy import export
from recbole_lth.engine import results
from recbole_lth.engine.trainer import invalidate_caches, sparse_trainer
from recbole_lth.views import popularity, report

from conftest import QUICK

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# One short real run shared by the tests: OMP on BPR with the default
# embedding size (64), so the tables have their real ml-100k shapes.
OMP_SETTINGS = {**QUICK, "embedding_size": 64, "epochs": 2, "target_sparsities": [0.5, 0.9]}


@pytest.fixture(scope="module")
def omp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("omp")
    cwd = os.getcwd()
    os.chdir(root)  # RecBole writes log_tensorboard/ into the working directory
    try:
        settings = {**OMP_SETTINGS, "output_root": str(root / "runs")}
        result = recbole_lth.run(model="BPR", dataset="ml-100k", method="omp", config_dict=settings)
    finally:
        os.chdir(cwd)
    return result.run_dir, settings


def _rows(run_dir):
    return {r["ticket"]: r for r in results.read_results(run_dir)}


# ------------------------------------------------------------------ export
def _magnitude_tables(shapes, sparsity, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = {n: torch.randn(s, generator=generator) for n, s in shapes.items()}
    masks = pruning.magnitude_prune(weights, {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()},
                                    sparsity, "global")
    return {n: w * masks[n] for n, w in weights.items()}, masks


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
@pytest.mark.parametrize("model", ["BPR", "MultiVAE"])
def test_export_size_bound_on_ml100k_tables(omp_run, tmp_path, model, sparsity):
    counts = checkpoint.load(omp_run[0] / "popularity.pt")["state_dict"]
    n_users, n_items = counts["user"].numel(), counts["item"].numel()
    shapes = {
        # BPR/LightGCN tables, and MultiVAE's item-sized first and last Linear (600 hidden units).
        "BPR": {"user_embedding.weight": (n_users, 64), "item_embedding.weight": (n_items, 64)},
        "MultiVAE": {"encoder.0.weight": (600, n_items), "decoder.2.weight": (n_items, 600)},
    }[model]
    state, masks = _magnitude_tables(shapes, sparsity)
    path = export.write_export(tmp_path / "t.pt", state, masks, {"model": model})
    dense_bytes = sum(w.numel() * 4 for w in state.values())
    size = os.path.getsize(path)
    assert size <= ((1 - sparsity) + 0.04) * dense_bytes
    assert size >= (1 - sparsity) * dense_bytes  # the kept values are really in there
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == export.FORMAT and raw["meta"]["model"] == model
    unpacked, unpacked_masks, _ = export.read_export(path)
    for name in shapes:
        assert torch.equal(unpacked[name], state[name])
        assert torch.equal(unpacked_masks[name], masks[name])


def test_pack_bits_roundtrip_on_odd_sizes():
    for numel in (1, 7, 8, 9, 1001):
        mask = torch.rand(numel, generator=torch.Generator().manual_seed(numel)) < 0.3
        packed = export.pack_bits(mask)
        assert packed.dtype == torch.uint8 and packed.numel() == -(-numel // 8)
        assert torch.equal(export.unpack_bits(packed, numel), mask)


def test_export_load_evaluate_gives_the_tickets_test_metrics(omp_run, tmp_path):
    run_dir, settings = omp_run
    rows = _rows(run_dir)
    assert set(rows) == {"dense", "omp_0.5", "omp_0.9"}
    run = api.prepare(model="BPR", dataset="ml-100k", method="omp", config_dict=settings)
    assert run.run_dir == run_dir
    # popularity.pt counts the training split only.
    counts = checkpoint.load(run_dir / "popularity.pt")["state_dict"]
    assert int(counts["user"].sum()) == int(counts["item"].sum()) == len(run.train_data.dataset)
    for key in ("omp_0.5", "omp_0.9"):
        out = tmp_path / f"{key}.pt"
        assert cli.main(["export", str(run_dir), key, "--out", str(out)]) == 0
        state_dict, masks, meta = export.read_export(out)
        assert meta["ticket"] == key and meta["model"] == "BPR"
        run.model.load_state_dict(state_dict)
        invalidate_caches(run.model)
        trainer = sparse_trainer(run.config, run.model, ParameterMask(run.prunable, masks))
        result = trainer.evaluate(run.test_data, load_best_model=False, show_progress=False)
        trainer.close()
        row = rows[key]
        assert abs(row["sparsity"] - float(key.split("_")[1])) < 1e-4
        for metric, value in result.items():
            assert float(value) == row[f"test_{metric}"], (key, metric)
        assert os.path.getsize(out) <= ((1 - row["sparsity"]) + 0.04) * 4 * row["prunable_params"]


# ------------------------------------------------------------------ report
FIXED_RESULTS = [
    # method, ticket, sparsity, test_recall@20, test_ndcg@20, best_epoch, extra columns
    {"method": "imp", "model": "BPR", "dataset": "ml-100k", "ticket": "dense", "sparsity": 0.0,
     "prunable_params": 1000, "active_params": 1000, "nonzero_params": 1000, "best_epoch": 9,
     "valid_recall@20": 0.20, "test_recall@10": 0.11, "test_recall@20": 0.20, "test_ndcg@20": 0.10,
     "train_seconds": 3.0},
    {"method": "imp", "model": "BPR", "dataset": "ml-100k", "ticket": "round_01", "sparsity": 0.2,
     "prunable_params": 1000, "active_params": 800, "nonzero_params": 800, "best_epoch": 7,
     "valid_recall@20": 0.21, "test_recall@10": 0.12, "test_recall@20": 0.22, "test_ndcg@20": 0.11,
     "train_seconds": 2.5},
    {"method": "imp", "model": "BPR", "dataset": "ml-100k", "ticket": "round_02", "sparsity": 0.36,
     "sparsity[user_embedding.weight]": 0.3, "sparsity[item_embedding.weight]": 0.42,
     "prunable_params": 1000, "active_params": 640, "nonzero_params": 640, "best_epoch": 12,
     "valid_recall@20": 0.17, "test_recall@10": 0.09, "test_recall@20": 0.18, "test_ndcg@20": 0.09,
     "train_seconds": 2.0},
    # a row from a method that adds columns (costs) and leaves others out
    {"method": "dsl", "model": "BPR", "dataset": "ml-100k", "ticket": "dsl_0.8", "sparsity": 0.8,
     "prunable_params": 1000, "active_params": 200, "best_epoch": 4, "test_recall@20": 0.205,
     "test_ndcg@20": 0.1, "macs_train_rel": 0.55, "macs_infer_rel": 0.2, "note": "regrow"},
]


def _write_fixture(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    columns = results.columns_of(rows)
    with open(run_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    paths.write_json(run_dir / "settings.json", {"model": "BPR", "dataset": "ml-100k", "valid_metric": "Recall@20"})
    return run_dir


def _line(text, ticket):
    return next(line for line in text.splitlines() if line.startswith(f"| {ticket} |") and "%" in line)


def test_report_from_a_fixed_results_csv(tmp_path):
    run_dir = _write_fixture(tmp_path / "fixed", FIXED_RESULTS)
    assert cli.main(["report", str(run_dir)]) == 0
    text = (run_dir / "report.md").read_text()
    assert "Dense reference: ticket `dense`" in text
    assert "test recall@20 ≥ the dense reference's" in text  # the definition is stated
    assert "**yes**" in _line(text, "round_01") and "+10.0%" in _line(text, "round_01")
    assert "| no |" in _line(text, "round_02") and "-10.0%" in _line(text, "round_02")
    assert "**yes**" in _line(text, "dsl_0.8")  # 0.205 >= 0.20
    assert "the sparsest is `dsl_0.8`" in text
    # A one-run verdict says it is one seed's, and how to get one over seeds (issue 35, item 6).
    assert "These verdicts are one seed's (RecBole's default, 2020)" in text and "--seeds=[" in text
    cost = next(line for line in text.splitlines() if line.startswith("| dsl_0.8 | dsl | 0.8 |") and "row" in line)
    assert "| 0.55 | 0.2 | row |" in cost  # the method's own MAC columns are used
    cost = next(line for line in text.splitlines() if line.startswith("| round_02 | imp |") and "costs" in line)
    assert "| 4000 | 2685 | 0.6713 |" in cost  # bitmap 1000/8 bytes + 4 bytes x 640 kept
    # recbole_lth.sparse.costs on BPR: both tables read by every product, equal shares of (1-0.3, 1-0.42)
    assert "| 0.64 | 0.64 | costs |" in cost
    cost = next(line for line in text.splitlines() if line.startswith("| round_01 | imp |") and "1−s" in line)
    assert "| 0.8 | 0.8 | 1−s |" in cost  # no per-table sparsities: the stated fallback
    curve = (run_dir / "curve.png").read_bytes()
    assert curve.startswith(PNG_MAGIC) and len(curve) > 10_000
    assert "No stored ticket to analyse" in text


def test_report_without_dense_reference(tmp_path):
    rows = [r for r in FIXED_RESULTS if r["sparsity"] > 0]
    run_dir = _write_fixture(tmp_path / "nodense", rows)
    text = report.write_report(run_dir).read_text()
    assert "No dense reference in this run" in text
    assert (run_dir / "curve.png").read_bytes().startswith(PNG_MAGIC)


def test_report_of_a_real_run_has_embedding_sizes(omp_run):
    run_dir, _ = omp_run
    text = (run_dir / "report.md").read_text()  # written at the end of recbole_lth.run
    assert "Ticket `omp_0.9`" in text  # the sparsest ticket by default
    assert (run_dir / "embedding_sizes.png").read_bytes().startswith(PNG_MAGIC)
    assert "| `user_embedding.weight` | user | 5 |" in text and "| `item_embedding.weight` | item | 1 |" in text
    # the bucket table accounts for every kept entry of the ticket (padding row aside)
    masks = checkpoint.load(run_dir / "tickets" / "omp_0.9" / "ticket.pt")["masks"]
    counts = popularity.load_popularity(run_dir)
    records, _ = popularity.embedding_size_buckets(masks, counts, buckets=5, axes=paths.table_axes(run_dir))
    for name, mask in masks.items():
        mine = [r for r in records if r["tensor"] == name]
        assert sum(r["entities"] for r in mine) == mask.shape[0] - 1
        assert abs(sum(r["entities"] * r["mean_kept"] for r in mine) - int(mask[1:].sum())) < 1e-3
        assert all(a["max_inter"] <= b["min_inter"] for a, b in zip(mine, mine[1:]))


def test_entity_axis_maps_rows_and_columns():
    assert entity_axis("user_embedding.weight", (10, 16), {"user": 10, "item": 30}) == ("user", 0)
    assert entity_axis("encoder.0.weight", (600, 30), {"user": 10, "item": 30}) == ("item", 1)
    assert entity_axis("h_item.weight", (16, 30), {"user": 10, "item": 30}) == ("item", 1)
    assert entity_axis("mlp.0.weight", (16, 32), {"user": 10, "item": 30}) is None
    # With the module type: an item-sized output layer has a row per item.
    assert entity_axis("decoder.2.weight", (30, 600), {"user": 10, "item": 30}, linear=True) == ("item", 0)
    assert entity_axis("h_item.weight", (16, 30), {"user": 10, "item": 30}, linear=True) == ("item", 1)


def test_report_failure_is_a_warning_and_keeps_results(quick_run, monkeypatch, caplog):
    def broken(run_dir, **kwargs):
        raise RuntimeError("picture library missing")

    monkeypatch.setattr(report, "write_report", broken)
    with caplog.at_level(logging.WARNING, logger="recbole_lth"):
        result = quick_run("BPR", "dense", epochs=1)
    assert result.results_csv.is_file() and len(result.rows) == 1
    assert any("report not written" in r.message for r in caplog.records)


# ----------------------------------------------------------------- compare
def test_compare_merges_two_run_directories(omp_run, tmp_path):
    fixed = _write_fixture(tmp_path / "fixed", FIXED_RESULTS)
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(fixed), str(omp_run[0]), "--out", str(out)]) == 0
    merged = list(csv.DictReader(open(out / "comparison.csv")))
    assert len(merged) == len(FIXED_RESULTS) + 3
    assert {r["run"] for r in merged} == {"fixed", omp_run[0].name}
    assert "macs_train_rel" in merged[0] and merged[-1]["macs_train_rel"] == ""
    text = (out / "comparison.md").read_text()
    assert text.count("(reference)") == 2  # each run against its own dense row
    assert (out / "comparison.png").read_bytes().startswith(PNG_MAGIC)


def test_report_ticket_and_buckets_options(omp_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(omp_run[0], run_dir)
    assert cli.main(["report", str(run_dir), "--ticket", "omp_0.5", "--buckets", "3"]) == 0
    text = (run_dir / "report.md").read_text()
    assert "Ticket `omp_0.5` (sparsity 0.5)" in text and "split into 3 equal-size buckets" in text
    for table in ("user_embedding.weight", "item_embedding.weight"):
        buckets = [line for line in text.splitlines() if line.startswith(f"| `{table}` |")]
        assert [line.split(" | ")[2] for line in buckets] == ["1", "2", "3"]
    # The analysed mask is that ticket's: kept entries over the buckets add up to its own.
    masks = checkpoint.load(run_dir / "tickets" / "omp_0.5" / "ticket.pt")["masks"]
    kept = sum(int(m[1:].sum()) for m in masks.values())
    total = 0.0
    for line in text.splitlines():
        if line.startswith("| `") and "embedding.weight` |" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            total += int(cells[4]) * float(cells[5])
    assert abs(total - kept) < 1.0 * 3 * 2  # mean_kept is printed to 2 decimals
    assert cli.main(["report", str(run_dir), "--buckets", "0"]) == 2


def test_compare_borrows_a_matching_dense_row_or_says_why_not(omp_run, tmp_path, capsys):
    omp_dir, settings = omp_run
    same = recbole_lth.run(model="BPR", dataset="ml-100k", method="rp",
                           config_dict={**settings, "target_sparsities": [0.5], "run_dir": str(tmp_path / "rp")})
    other = recbole_lth.run(model="BPR", dataset="ml-100k", method="rp",
                            config_dict={**settings, "target_sparsities": [0.5], "learning_rate": 0.01,
                                         "run_dir": str(tmp_path / "rp_lr")})
    dense = _rows(omp_dir)["dense"]
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(omp_dir), str(same.run_dir), str(other.run_dir), "--out", str(out)]) == 0
    text = (out / "comparison.md").read_text()
    assert f"| rp | BPR | ml-100k | rp | 1 | `dense` of {omp_dir.name} (same model, data, seed and RecBole " \
           "settings) |" in text
    assert "| rp_lr | BPR | ml-100k | rp | 1 | none: the closest dense row" in text
    assert "learning_rate (0.01 vs 0.001)" in text
    rp_row = _rows(same.run_dir)["rp_0.5"]
    change = (rp_row["test_recall@20"] - dense["test_recall@20"]) / dense["test_recall@20"]
    line = next(row for row in text.splitlines() if row.startswith("| rp | rp | rp_0.5 |"))
    assert f"{100 * change:+.1f}%" in line
    assert line.endswith("| **yes** |" if rp_row["test_recall@20"] >= dense["test_recall@20"] else "| no |")
    unmatched = next(row for row in text.splitlines() if row.startswith("| rp_lr | rp | rp_0.5 |"))
    assert unmatched.endswith("| no reference | no reference |")
    # Alone, a run without a dense row says there is none to borrow.
    assert cli.main(["compare", str(same.run_dir), "--out", str(tmp_path / "alone")]) == 0
    assert "none: no dense row here or in another given run" in (tmp_path / "alone" / "comparison.md").read_text()
