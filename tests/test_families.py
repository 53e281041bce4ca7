"""RecBole's model families through one task protocol: sequential and
context-aware (CTR) models run the methods, are judged in their metric's
direction, and are refused with one line on data or keys their task cannot use."""
from __future__ import annotations

import pytest
import torch

import recbole_lth
from recbole_lth import backbones
from recbole_lth.api import settings_for
from recbole_lth.core import tasks
from recbole_lth.core.errors import ConfigError
from recbole_lth.views import judge, summary
from tests.conftest import sequential_settings, write_tiny_sequences

# RecBole's CTR setting of its bundled ml-100k (threshold and load_col come from RecBole itself).
CTR_QUICK = {"epochs": 1, "state": "ERROR", "show_progress": False, "progress": False, "embedding_size": 8,
             "train_batch_size": 2048, "mlp_hidden_size": [16], "attention_size": 8, "n_layers": 1, "num_heads": 1}


def ctr_settings(model: str, **overrides) -> dict:
    from recbole_lth.engine import builder

    known = builder.recbole_keys(model, "ml-100k")
    return {k: v for k, v in {**CTR_QUICK, **overrides}.items() if k in known or k not in CTR_QUICK}


# ------------------------------------------------------------------ the task
def test_each_model_has_the_task_of_its_family():
    assert tasks.for_model("BPR") is tasks.GENERAL
    assert tasks.for_model("SASRec") is tasks.SEQUENTIAL and tasks.for_model("GRU4Rec") is tasks.SEQUENTIAL
    assert tasks.for_model("DeepFM") is tasks.CONTEXT and tasks.for_model("AutoInt") is tasks.CONTEXT
    assert tasks.for_model("NoSuchModel") is None
    for name in ("SASRec", "BERT4Rec", "FM", "DeepFM", "AutoInt", "WideDeep", "DCN", "xDeepFM"):
        backbones.check_model(name)  # no refusal
    with pytest.raises(ConfigError, match="a model other than DIN .scored by AUC on sampled items"):
        backbones.check_model("DIN")
    with pytest.raises(ConfigError, match="context-aware"):
        backbones.check_model("NoSuchModel")


def test_a_task_sets_its_evaluation_below_the_user():
    settings, _ = settings_for("DeepFM", "ml-100k", "omp", None, {"state": "ERROR"})
    assert settings["metrics"] == ["AUC", "LogLoss"] and settings["valid_metric"] == "AUC"
    assert settings["eval_args"]["mode"] == "labeled"
    seq, _ = settings_for("SASRec", "ml-100k", "omp", None, {"state": "ERROR"})
    assert seq["eval_args"]["split"] == {"LS": "valid_and_test"} and seq["train_neg_sample_args"] is None
    # A pairwise-loss sequential model keeps RecBole's sampled negatives (FPMC trained none: KeyError neg_item_id).
    assert "train_neg_sample_args" not in settings_for("FPMC", "ml-100k", "omp", None, {"state": "ERROR"})[0]
    assert seq["valid_metric"] == "Recall@20"
    mine, _ = settings_for("DeepFM", "ml-100k", "omp", None, {"state": "ERROR", "valid_metric": "LogLoss"})
    assert mine["valid_metric"] == "LogLoss"


@pytest.mark.parametrize("model, overrides, key", [
    ("FM", {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full"}}, "eval_args"),
    ("SASRec", {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full"}}, "eval_args"),
    ("SASRec", {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "labeled"}}, "eval_args"),
    ("BPR", {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "labeled"}}, "eval_args"),
    ("SASRec", {"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}, "train_neg_sample_args"),
])
def test_keys_of_another_task_are_refused_before_anything_runs(model, overrides, key):
    with pytest.raises(ConfigError) as err:
        settings_for(model, "ml-100k", "omp", None, {"state": "ERROR", **overrides})
    assert err.value.key == key


def test_a_ctr_model_on_data_without_labels_and_a_sequential_one_without_time_are_refused(
        tiny_data, tiny_sequences, tmp_path):
    data_path, dataset = tiny_data
    common = {"data_path": data_path, "state": "ERROR", "output_root": str(tmp_path / "runs"), "epochs": 1}
    with pytest.raises(ConfigError) as err:
        recbole_lth.run(model="FM", dataset=dataset, method="omp", config_dict=common)
    assert err.value.key == "LABEL_FIELD" and "threshold" in str(err.value)
    with pytest.raises(ConfigError, match="no timestamp column"):
        recbole_lth.run(model="SASRec", dataset=dataset, method="omp", config_dict=common)
    with pytest.raises(ConfigError) as err:  # RecBole would load only user_id and item_id
        recbole_lth.run(model="SASRec", dataset=tiny_sequences[1], method="omp", config_dict={
            **common, "load_col": {"inter": ["user_id", "item_id"]}})
    assert err.value.key == "load_col"
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------ the direction
def test_a_lower_logloss_wins_and_a_higher_one_loses():
    dense = {"ticket": "dense", "sparsity": 0.0, "test_logloss": 0.40, "test_auc": 0.80}
    better = {"ticket": "omp_0.5", "sparsity": 0.5, "test_logloss": 0.39, "test_auc": 0.79,
              "nonzero_params": 5, "prunable_params": 10}
    assert judge.is_winning(better, dense, "test_logloss") is True
    assert judge.is_winning(better, dense, "test_auc") is False
    assert judge.at_least("test_logloss") == "≤" and judge.at_least("test_auc") == "≥"
    # Over seeds: Δ = ticket − dense; a LogLoss interval below 0 is winning, above 0 losing.
    assert summary.verdict_of(-0.02, -0.01, "test_logloss") == "winning"
    assert summary.verdict_of(0.01, 0.02, "test_logloss") == "losing"
    assert summary.verdict_of(0.01, 0.02, "test_auc") == "winning"
    seeds = {s: [dict(dense, test_logloss=0.40 + d), dict(better, test_logloss=0.38 + d)]
             for s, d in ((1, 0.0), (2, 0.01), (3, 0.03))}
    rows = {r["ticket"]: r for r in summary.summarize(seeds, "LogLoss")}
    assert rows["omp_0.5"]["verdict_metric"] == "test_logloss" and rows["omp_0.5"]["verdict"] == "winning"


# ------------------------------------------------------------------- runs
def test_a_sequential_study_prunes_the_item_table(tiny_sequences, tmp_path):
    data_path, dataset = tiny_sequences
    result = recbole_lth.run(model="SASRec", dataset=dataset, method=["omp", "rp", "dsl", "snip", "pep"],
                             config_dict=sequential_settings("SASRec", data_path=data_path, epochs=2,
                                                             target_sparsities=[0.5],
                                                             output_root=str(tmp_path / "runs")))
    rows = {r["ticket"]: r for r in result.rows}
    assert set(rows) >= {"dense", "omp_0.5", "rp_0.5", "dsl_0.5", "snip_0.5"}
    for key in ("omp_0.5", "rp_0.5", "dsl_0.5", "snip_0.5"):
        assert rows[key]["sparsity"] == pytest.approx(0.5, abs=1e-3)
        assert 0 < rows[key]["test_recall@10"] <= 1
    # prune_params: embeddings is the item table and the position table, never the transformer.
    assert {c for c in rows["dense"] if c.startswith("sparsity[")} == {
        "sparsity[item_embedding.weight]", "sparsity[position_embedding.weight]"}
    axes = recbole_lth.core.paths.table_axes(result.run_dir)
    assert axes["item_embedding.weight"] == ("item", 0) and axes["position_embedding.weight"] is None


@pytest.mark.parametrize("model", ["GRU4Rec", "BERT4Rec"])
def test_one_omp_ticket_on_other_sequential_models(tiny_sequences, tmp_path, model):
    data_path, dataset = tiny_sequences
    result = recbole_lth.run(model=model, dataset=dataset, method="omp", config_dict=sequential_settings(
        model, data_path=data_path, target_sparsities=[0.8], output_root=str(tmp_path / "runs")))
    ticket = next(r for r in result.rows if r["method"] == "omp")
    assert ticket["sparsity"] == pytest.approx(0.8, abs=1e-3) and "test_ndcg@10" in ticket


@pytest.mark.parametrize("model", ["FM", "DeepFM", "AutoInt"])
def test_one_omp_ticket_on_a_ctr_model_reports_auc_and_logloss(tmp_path, model):
    result = recbole_lth.run(model=model, dataset="ml-100k", method="omp", config_dict=ctr_settings(
        model, target_sparsities=[0.8], output_root=str(tmp_path / "runs")))
    rows = {r["ticket"]: r for r in result.rows}
    ticket = rows["omp_0.8"]
    assert ticket["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert 0.5 < rows["dense"]["test_auc"] < 1 and 0 < ticket["test_logloss"] < 1
    assert not any(c.startswith("test_recall") for c in ticket)
    axes = recbole_lth.core.paths.table_axes(result.run_dir)
    assert axes["token_embedding_table.embedding.weight"] == ("feature", 0)
    report = (result.run_dir / "report.md").read_text()
    assert "test auc ≥ the dense reference's" in report


# ------------------------------------------- baselines, export, workers, resume
def _study(model, data, tmp_path, name, **overrides):
    """One small study of ``model`` (SASRec: the tiny histories; a CTR model: ml-100k)."""
    if model == "SASRec":
        data_path, dataset = data
        settings = sequential_settings(model, data_path=data_path, **overrides)
    else:
        dataset, settings = "ml-100k", ctr_settings(model, **overrides)
    settings.update(target_sparsities=[0.5], worker_threads=1, run_dir=str(tmp_path / name))
    return recbole_lth.run(model=model, dataset=dataset, method=["omp", "rp", "small_dense"], config_dict=settings)


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory):
    """Per family, the study once in this process: the reference for workers and resume."""
    root = tmp_path_factory.mktemp("families")
    data = write_tiny_sequences(root)
    return {model: (data, _study(model, data, root, f"{model}-one")) for model in ("SASRec", "DeepFM")}


@pytest.mark.parametrize("model, width_key", [("SASRec", "hidden_size"), ("DeepFM", "embedding_size")])
def test_small_dense_shrinks_the_families_tables(family_runs, model, width_key):
    rows = {r["ticket"]: r for r in family_runs[model][1].rows}
    dense, small = rows["dense"], rows["small_dense_0.5"]
    # The row counts the small model's tables against the full model's (sparsity = the budget reached).
    assert small["prunable_params"] == dense["prunable_params"]
    assert small["sparsity"] == pytest.approx(0.5, abs=0.06) and small["active_params"] < 0.56 * dense["active_params"]
    import re

    assert int(re.search(rf"{width_key}=(\d+)", small["note"]).group(1)) < (16 if model == "SASRec" else 8)


@pytest.mark.parametrize("model", ["SASRec", "DeepFM"])
def test_workers_and_a_resumed_run_give_the_sequential_results_bit_for_bit(family_runs, tmp_path, model):
    from tests.test_parallel import assert_same_run

    data, reference = family_runs[model]
    parallel = _study(model, data, tmp_path, "two-workers", workers=2)
    assert_same_run(reference.run_dir, parallel.run_dir)
    # Resume: a run whose last ticket was deleted trains it again, to the same bits.
    resumed = tmp_path / "resumed"
    import shutil

    shutil.copytree(reference.run_dir, resumed)
    shutil.rmtree(resumed / "tickets" / "rp_0.5")
    _study(model, data, tmp_path, "resumed")
    assert_same_run(reference.run_dir, resumed)


@pytest.mark.parametrize("model", ["SASRec", "DeepFM"])
def test_a_compact_export_scores_the_tickets_exact_metrics(family_runs, tmp_path, model):
    from recbole_lth.deploy import export
    from recbole_lth.engine import results

    run_dir = family_runs[model][1].run_dir
    row = next(r for r in results.read_results(run_dir) if r["ticket"] == "omp_0.5")
    out = export.export_ticket(run_dir, "omp_0.5", tmp_path / "t.pt")
    evaluated = export.evaluate_compact(out, chunk_rows=7)
    assert evaluated["metrics"] == {k.removeprefix("test_"): v for k, v in row.items() if k.startswith("test_")}


def test_a_ctr_report_buckets_each_fields_features_by_their_training_rows(family_runs):
    from recbole_lth.views.popularity import load_popularity

    run_dir = family_runs["DeepFM"][1].run_dir
    counts = load_popularity(run_dir)
    fields = {k.removeprefix("field:"): v for k, v in counts.items() if k.startswith("field:")}
    assert {"user_id", "item_id", "age", "gender", "occupation"} <= set(fields)
    def rows_counted(field):  # every training row holds one value of each field (its padding row excluded)
        offset, dim = (int(x) for x in fields[field])
        return int(counts["feature"][offset + 1:offset + dim].sum())

    assert rows_counted("gender") == rows_counted("item_id") == rows_counted("occupation") > 50_000
    report = (run_dir / "report.md").read_text()
    assert "| `token_embedding_table.embedding.weight` | occupation | 1 |" in report


@pytest.mark.parametrize("model", ["SASRec", "DeepFM"])
def test_score_distillation_trains_a_family_ticket_against_its_dense_teacher(tmp_path, tiny_sequences, model):
    from recbole_lth.core import checkpoint

    if model == "SASRec":
        dataset, settings = tiny_sequences[1], sequential_settings(model, data_path=tiny_sequences[0])
    else:
        dataset, settings = "ml-100k", ctr_settings(model)
    settings.update(target_sparsities=[0.5], kd_type="score", output_root=str(tmp_path / "runs"))
    result = recbole_lth.run(model=model, dataset=dataset, method=["omp", "omp_kd"], config_dict=settings)
    rows = {r["ticket"]: r for r in result.rows}
    assert rows["omp_kd_0.5"]["kd_weight"] == 1.0 and rows["omp_kd_0.5"]["kd_type"] == "score"
    plain, distilled = (checkpoint.load(result.run_dir / "tickets" / k / "ticket.pt")["state_dict"]
                        for k in ("omp_0.5", "omp_kd_0.5"))
    assert any(not torch.equal(plain[n], distilled[n]) for n in plain)  # the KD term changed the training
    with pytest.raises(ConfigError) as err:  # ranking KD ranks a user's items: not these families'
        settings_for(model, dataset, "omp_kd", None, {"state": "ERROR"})
    assert err.value.key == "kd_type"


def test_per_field_scope_gives_each_ctr_field_its_own_budget(tmp_path):
    from recbole_lth.core import checkpoint, paths
    from recbole_lth.engine import builder

    settings = ctr_settings("FM", target_sparsities=[0.8], output_root=str(tmp_path / "runs"))
    masks = {}
    for scope, tickets in (("global", ["omp"]), ("per_field", ["omp", "rp"])):
        result = recbole_lth.run(model="FM", dataset="ml-100k", method=tickets,
                                 config_dict={**settings, "prune_scope": scope})
        masks[scope] = {f"{k}_0.8": checkpoint.load(paths.RunPaths(result.run_dir).ticket_weights(f"{k}_0.8"))["masks"]
                        for k in tickets}
    model = builder.rebuild(paths.read_json(paths.RunPaths(result.run_dir).settings), result.run_dir)[1]
    table = "token_embedding_table.embedding.weight"
    fields = tasks.field_rows(model, [table])[table]
    assert {f for f, _, _ in fields} >= {"user_id", "item_id", "age", "gender", "occupation"}

    def kept(mask, start, rows):
        return float(mask[table][start:start + rows].float().mean())

    for ticket in ("omp_0.8", "rp_0.8"):
        # Every field keeps its own 20% (up to rounding a field's count), whatever its magnitudes.
        assert all(abs(kept(masks["per_field"][ticket], s, r) - 0.2) <= 1 / (r * 8) + 1e-9 for _, s, r in fields)
    spread = [kept(masks["global"]["omp_0.8"], s, r) for _, s, r in fields]
    assert max(spread) - min(spread) > 0.05  # one global ranking favours some fields over others
    with pytest.raises(ConfigError) as err:
        settings_for("FM", "ml-100k", "dsl", None, {"state": "ERROR", "prune_scope": "per_field"})
    assert err.value.key == "prune_scope" and "global or per_table for dsl" in str(err.value)


def test_feature_embeddings_leave_a_ctr_models_linear_part_dense(tmp_path):
    """The PEP paper prunes and counts the embedding table, not the first-order (LR) weights."""
    from recbole_lth.core import paths

    settings = ctr_settings("FM", target_sparsities=[0.99], prune_params="feature_embeddings",
                            output_root=str(tmp_path / "runs"))
    result = recbole_lth.run(model="FM", dataset="ml-100k", method="omp", config_dict=settings)
    tables = set(paths.table_axes(result.run_dir))
    assert "token_embedding_table.embedding.weight" in tables
    assert tables and not any(name.startswith("first_order_linear.") for name in tables)
    ticket = next(r for r in result.rows if r["ticket"] == "omp_0.99")
    assert ticket["sparsity"] == pytest.approx(0.99, abs=1e-3)
