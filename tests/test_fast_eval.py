"""The plugin's full-sort evaluation (index tensors built once per loader, the
Collector's rec.topk from a sorted lookup) gives exactly what RecBole's
untouched ``Trainer.evaluate`` gives: the same DataStruct, the same metrics."""
from __future__ import annotations

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import get_trainer

from recbole_lth.core.masking import ParameterMask, select_prunable
from recbole_lth.engine import builder
from recbole_lth.engine.trainer import evaluation_trainer, sparse_trainer

# Every metric computed from rec.topk, and one from rec.items (ItemCoverage,
# RecBole's other, fails in RecBole's own get_data_struct: .cpu() of an int).
METRICS = ["Recall", "NDCG", "MRR", "Hit", "Precision", "ShannonEntropy"]


def _prepared(model_name, data_path, dataset, users_per_batch, tmp_path, **extra):
    settings = {"model": model_name, "dataset": dataset, "data_path": data_path, "state": "WARNING",
                "show_progress": False, "embedding_size": 16, "learning_rate": 0.01, "metrics": METRICS,
                "topk": [3, 10], "metric_decimal_place": 12, "seed": 7, "train_batch_size": 4096, **extra}
    config = builder.recbole_config(settings, tmp_path / "saved")
    builder.seed(config)
    loaded = create_dataset(config)
    config["eval_batch_size"] = users_per_batch * loaded.item_num
    train, valid, test = data_preparation(config, loaded)
    model = builder.new_model(config, train.dataset)
    reference = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reference._train_epoch(train, 0)  # one epoch: rankings with hits to compare
    return config, model, train, {"valid": valid, "test": test}, reference


def _evaluated(trainer, loader):
    """``(metrics, DataStruct)`` of one ``evaluate``."""
    seen = []
    evaluate = trainer.evaluator.evaluate
    trainer.evaluator.evaluate = lambda struct: seen.append(struct) or evaluate(struct)
    result = trainer.evaluate(loader, load_best_model=False, show_progress=False)
    trainer.evaluator.evaluate = evaluate
    return result, seen[0]


def _assert_same(ours, theirs):
    (metrics, struct), (expected, expected_struct) = ours, theirs
    assert dict(metrics) == dict(expected)
    for key in ("rec.topk", "rec.items"):
        a, b = struct.get(key), expected_struct.get(key)
        assert a.dtype == b.dtype and torch.equal(a, b), key


def _no_collate(monkeypatch):
    def refused(self, index):
        raise AssertionError("RecBole's per-batch collate_fn ran")

    monkeypatch.setattr(FullSortEvalDataLoader, "collate_fn", refused)


@pytest.mark.parametrize("model_name", ["BPR", "LightGCN"])
@pytest.mark.parametrize("data", ["ml-100k", "tiny"])
def test_fast_full_sort_evaluation_equals_recboles(model_name, data, tiny_data, tmp_path, monkeypatch):
    data_path, dataset = tiny_data if data == "tiny" else (builder.bundled_data_path(), "ml-100k")
    users_per_batch = 7 if data == "tiny" else 100
    config, model, train, loaders, reference = _prepared(model_name, data_path, dataset, users_per_batch, tmp_path)
    expected = {}
    for name, loader in loaders.items():
        assert len(loader.uid_list) % users_per_batch != 0  # a last batch shorter than the others
        expected[name] = _evaluated(reference, loader)
        assert expected[name][0]["hit@10"] > 0
    _no_collate(monkeypatch)  # from here on, only the plugin's path can evaluate
    trainers = {"sparse": sparse_trainer(config, model, ParameterMask(select_prunable(model, "embeddings"))),
                "evaluation": evaluation_trainer(config, model)}
    for trainer in trainers.values():
        for name, loader in loaders.items():
            for _ in range(2):  # the second time from the loader's cached index
                _assert_same(_evaluated(trainer, loader), expected[name])


def test_metrics_that_need_every_score_take_recboles_path(tiny_data, tmp_path):
    config, model, train, loaders, reference = _prepared("BPR", *tiny_data, 7, tmp_path, metrics=["Recall", "GAUC"])
    ours = evaluation_trainer(config, model)
    for loader in loaders.values():
        expected = reference.evaluate(loader, load_best_model=False)
        assert ours.evaluate(loader, load_best_model=False) == expected and "gauc" in expected
