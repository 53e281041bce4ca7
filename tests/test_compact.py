"""Compact tickets at inference: RecBole scores through compact tables, no dense copy, honest bytes."""
import json

import pytest
import torch

from recbole_lth import cli
from recbole_lth.core import compact, paths
from recbole_lth.core.compact import CompactTable, layout_bytes
from recbole_lth.deploy import export
from recbole_lth.engine import results

BACKBONES = ["BPR", "LightGCN", "NeuMF", "MultiVAE", "CDAE"]
# int8 row-wise values may move a full-sort metric by a few ranks; on ml-100k
# after 2 epochs the measured changes were <= 0.001 (absolute).
INT8_TOLERANCE = 0.005


def _masked(shape, density, seed, empty_rows=()):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    mask = torch.rand(shape, generator=generator) < density
    mask[list(empty_rows)] = False
    return weight * mask, mask


@pytest.mark.parametrize("width", [16, 13])
@pytest.mark.parametrize("remap", [True, False])
def test_table_rows_are_the_masked_weights_and_bytes_match_the_layout(width, remap):
    weight, mask = _masked((50, width), 0.3, seed=width, empty_rows=(0, 7, 49))
    table = CompactTable.from_rows(weight, mask, remap=remap, chunk_rows=6)
    index = torch.tensor([[49, 0, 3], [7, 7, 12]])
    assert torch.equal(table.rows(index), weight[index])
    assert torch.equal(table.dense(), weight) and torch.equal(table.mask(), mask)
    assert (table.remap is not None) == remap
    counts = mask.sum(dim=1)
    assert table.nbytes() == layout_bytes(counts, width, value_format="fp32", remapped=remap)
    # By hand: 50 rows x (ceil(w/8) bitmap bytes + a 4-byte offset) + 4 bytes per kept value (+ the remap).
    stored = 47 if remap else 50
    assert table.nbytes() == stored * (-(-width // 8) + 4) + 4 * int(mask.sum()) + (4 * 50 if remap else 0)


def test_auto_remap_only_when_it_saves_bytes():
    few_empty = CompactTable.from_rows(*_masked((200, 64), 0.5, seed=1, empty_rows=(3,)))
    many_empty = CompactTable.from_rows(*_masked((200, 64), 0.5, seed=1, empty_rows=range(0, 200, 2)))
    assert few_empty.remap is None and many_empty.remap is not None
    assert torch.equal(many_empty.rows(torch.arange(4))[0], torch.zeros(64))


def test_int8_rows_are_within_half_a_step_and_pruned_entries_stay_zero():
    weight, mask = _masked((40, 32), 0.4, seed=3, empty_rows=(5,))
    table = CompactTable.from_rows(weight, mask, value_format="int8")
    got = table.dense()
    assert torch.equal(got[~mask], torch.zeros(int((~mask).sum())))
    low = torch.where(mask, weight, torch.inf).amin(1)
    high = torch.where(mask, weight, -torch.inf).amax(1)
    step = ((high - low) / 255).clamp(min=0).nan_to_num(0)
    error = (got - weight).abs().amax(1)
    # half a step, plus the fp16 rounding of the row's offset
    assert bool((error[mask.any(1)] <= step[mask.any(1)] / 2 + low.abs()[mask.any(1)] * 2**-10 + 1e-6).all())
    assert table.nbytes() == layout_bytes(mask.sum(1), 32, value_format="int8", remapped=table.remap is not None)


class _Shapes(torch.overrides.TorchFunctionMode):
    """Records the shape of every tensor a torch function returns."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.shapes.append(tuple(item.shape))
        return out


@pytest.fixture(scope="module")
def backbone_runs(tmp_path_factory):
    """One OMP run per backbone (2 epochs, tickets at 0.5 and 0.9)."""
    import recbole_lth
    from conftest import quick_settings

    root = tmp_path_factory.mktemp("compact")
    runs = {}
    for model in BACKBONES:
        settings = quick_settings(model, output_root=str(root / "runs"), target_sparsities=[0.5, 0.9])
        runs[model] = recbole_lth.run(model=model, dataset="ml-100k", method="omp", config_dict=settings).run_dir
    return runs


@pytest.mark.parametrize("model", BACKBONES)
def test_compact_ticket_gives_the_tickets_test_metrics_through_recbole(backbone_runs, tmp_path, model):
    run_dir = backbone_runs[model]
    rows = {r["ticket"]: r for r in results.read_results(run_dir)}
    ticket = "omp_0.9"
    out = tmp_path / "t.pt"
    assert cli.main(["export", str(run_dir), ticket, "--out", str(out)]) == 0
    # Small chunks: every streamed path runs over many blocks.
    evaluated = export.evaluate_compact(out, chunk_rows=7)
    expected = {k.removeprefix("test_"): v for k, v in rows[ticket].items() if k.startswith("test_")}
    assert evaluated["metrics"] == expected
    tables = {k: v for k, v in evaluated["resident_bytes"].items() if k != "(rest)"}
    assert len(tables) == len(json.loads(paths.RunPaths(run_dir).tables.read_text()))
    dense_tables = 4 * rows[ticket]["prunable_params"]
    assert sum(tables.values()) <= (1 - 0.9) * dense_tables + 0.4 * dense_tables  # d = 16: 6/64 overhead per row

    int8 = tmp_path / "t8.pt"
    assert cli.main(["export", str(run_dir), ticket, "--out", str(int8), "--values", "int8"]) == 0
    quantised = export.evaluate_compact(int8)["metrics"]
    assert all(abs(quantised[k] - expected[k]) <= INT8_TOLERANCE for k in expected), (quantised, expected)
    # int8 values really are one byte each in memory
    _, loaded, *_ = export.load_compact(int8)
    for module in loaded.modules():
        if isinstance(module, CompactTable):
            assert module.values.dtype == torch.uint8 and module.scale.dtype == torch.float16


@pytest.mark.parametrize("model", ["BPR", "MultiVAE", "CDAE"])
def test_full_sort_scoring_never_builds_a_dense_item_table(backbone_runs, tmp_path, model):
    run_dir = backbone_runs[model]
    out = export.export_ticket(run_dir, "omp_0.5", tmp_path / "t.pt")
    config, loaded, _, _, _, test = export.load_compact(out, chunk_rows=100)
    n_items = loaded.n_items
    widths = {m.table.shape[1] for m in loaded.modules() if hasattr(m, "table")}
    users = torch.arange(1, 30)
    from recbole.data.interaction import Interaction

    with torch.no_grad(), _Shapes() as seen:
        scores = loaded.full_sort_predict(Interaction({loaded.USER_ID: users}))
    assert scores.numel() == len(users) * n_items
    dense_shapes = {(n_items, w) for w in widths} | {(w, n_items) for w in widths}
    assert seen.shapes and not dense_shapes & set(seen.shapes)
    assert max(s[0] for s in seen.shapes if len(s) == 2 and s[1] in widths) <= max(100, len(users))
    # and the same stream over the dense weights gives the dense model's scores
    state, _, _ = export.read_export(out)
    dense_model = export.deployed_model(run_dir, "omp_0.5")[1].eval()
    dense_model.load_state_dict(state)
    with torch.no_grad():
        reference = dense_model.full_sort_predict(Interaction({loaded.USER_ID: users}))
    assert torch.allclose(scores, reference, atol=1e-6)


def test_lightgcn_final_embeddings_option_is_the_propagated_model(backbone_runs, tmp_path):
    out = export.export_ticket(backbone_runs["LightGCN"], "omp_0.5", tmp_path / "t.pt")
    from recbole.data.interaction import Interaction

    _, streamed, *_ = export.load_compact(out)
    _, final, *_ = export.load_compact(out, final_embeddings=True)
    assert final.user_embedding is None and final.norm_adj_matrix is None
    users = Interaction({streamed.USER_ID: torch.arange(1, 9)})
    with torch.no_grad():
        assert torch.equal(streamed.full_sort_predict(users), final.full_sort_predict(users))
    with pytest.raises(ValueError, match="final_embeddings"):
        export.load_compact(export.export_ticket(backbone_runs["BPR"], "omp_0.5", tmp_path / "b.pt"),
                            final_embeddings=True)


def test_report_counts_bytes_per_layout_from_the_masks(backbone_runs):
    from recbole_lth.core import checkpoint
    from recbole_lth.views import report

    run_dir = backbone_runs["CDAE"]
    stored = checkpoint.load(paths.RunPaths(run_dir).ticket_weights("omp_0.9"))
    masks, state = stored["masks"], stored["state_dict"]
    axes = {k: v["axis"] for k, v in json.loads(paths.RunPaths(run_dir).tables.read_text()).items()}
    expected, empty = sum(v.numel() * 4 for k, v in state.items() if k not in masks), 0
    for name, mask in masks.items():
        rows = mask.t() if axes[name] == 1 else mask
        expected += rows.shape[0] * (-(-rows.shape[1] // 8) + 4) + 4 * int(rows.sum())
        empty += int((~rows.any(1)).sum())
    counted = export.ticket_bytes(run_dir, "omp_0.9")
    assert counted["layouts"]["bitmap+fp32"] == expected
    assert sum(e for e, _ in counted["empty_rows"].values()) == empty > 0  # 0.9 leaves rows empty
    text = report.write_report(run_dir).read_text()
    assert "## Bytes of a deployed ticket" in text and f"| {expected} |" in text


def test_export_evaluate_is_listed_in_the_report_and_bad_values_are_refused(backbone_runs, capsys):
    from recbole_lth.views import report

    run_dir = backbone_runs["BPR"]
    assert cli.main(["export", str(run_dir), "omp_0.5", "--values", "fp16", "--evaluate"]) == 0
    record = json.loads(paths.RunPaths(run_dir).export_evaluation("omp_0.5", "fp16").read_text())
    assert record["values"] == "fp16" and record["resident_table_bytes"] < record["dense_table_bytes"] * 0.5
    assert "compact (fp16)" in capsys.readouterr().out
    assert "### Compact exports evaluated" in report.write_report(run_dir).read_text()
    assert cli.main(["export", str(run_dir), "omp_0.5", "--format", "recbole", "--values", "int8"]) == 2
    assert "--values" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", str(run_dir), "omp_0.5", "--values", "int4"])
    assert exit_info.value.code == 2


def test_lcm_export_is_its_deployed_model_compact(quick_run, tmp_path):
    result = quick_run("BPR", "lcm", target_sparsities=[0.5], epochs=1)
    rows = {r["ticket"]: r for r in results.read_results(result.run_dir)}
    out = export.export_ticket(result.run_dir, "lcm_0.5", tmp_path / "l.pt")
    evaluated = export.evaluate_compact(out)
    assert evaluated["metrics"] == {k.removeprefix("test_"): v for k, v in rows["lcm_0.5"].items()
                                    if k.startswith("test_")}
    counted = export.ticket_bytes(result.run_dir, "lcm_0.5")["layouts"]
    # what it deploys: (users + items) x d' fp32, nothing of the frozen teacher table
    assert counted["dense fp32"] == 4 * rows["lcm_0.5"]["active_params"]
    assert compact.resident_bytes(export.load_compact(out)[1])["(rest)"] >= counted["dense fp32"]


@pytest.mark.parametrize("model", ["LightGCN", "NGCF"])
def test_a_graph_lcm_export_evaluates_as_trained(quick_run, tmp_path, model):
    # Its exported tables are small dense ones, not compact: the graph
    # backbones' compact scoring leaves them to the model's own forward.
    result = quick_run(model, "lcm", target_sparsities=[0.5], epochs=1, embedding_size=8)
    rows = {r["ticket"]: r for r in results.read_results(result.run_dir)}
    out = export.export_ticket(result.run_dir, "lcm_0.5", tmp_path / "l.pt")
    evaluated = export.evaluate_compact(out)["metrics"]
    trained = {k.removeprefix("test_"): v for k, v in rows["lcm_0.5"].items() if k.startswith("test_")}
    assert evaluated.keys() == trained.keys()
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-4), key
