"""SNIP: one-shot pruning at initialisation by |g ⊙ w|, then training."""
from __future__ import annotations

import csv

import pytest
import torch

from recbole_lth import api, methods
from recbole_lth.core import checkpoint, pruning
from recbole_lth.core.errors import ConfigError
from recbole_lth.methods import snip

from conftest import QUICK


def test_saliency_keeps_the_largest_gradient_times_weight():
    weights = {"t": torch.tensor([[1.0, -2.0], [0.5, 4.0]])}
    grads = {"t": torch.tensor([[3.0, 1.0], [-10.0, 0.0]])}  # |g*w| = 3, 2, 5, 0
    scores = pruning.saliency_scores(weights, grads)
    eligible = {"t": torch.ones(2, 2, dtype=torch.bool)}
    assert pruning.keep_top(scores, eligible, 0.5)["t"].tolist() == [[True, False], [True, False]]
    # Magnitude alone would keep 4.0 and -2.0: SNIP is a different criterion.
    assert pruning.magnitude_prune(weights, eligible, 0.5)["t"].tolist() == [[False, True], [False, True]]


def test_snip_prunes_the_initial_weights_by_saliency_and_trains_them(tmp_path):
    settings = {**QUICK, "epochs": 1, "learning_rate": 0.01, "target_sparsities": [0.5, 0.9], "snip_batches": 2,
                "output_root": str(tmp_path / "runs")}
    run = api.prepare(model="BPR", dataset="ml-100k", method="snip", config_dict=settings)
    grads = snip.init_gradients(run, 2)
    init = run.init_state()
    scores = pruning.saliency_scores({n: init[n] for n in run.prunable}, grads)
    methods.get("snip").plan(run)

    rows = list(csv.DictReader(open(run.paths.results)))
    assert [r["ticket"] for r in rows] == ["snip_0.5", "snip_0.9"]  # no dense ticket is trained
    total = int(rows[0]["prunable_params"])
    for row, target in zip(rows, (0.5, 0.9)):
        key = row["ticket"]
        mask = checkpoint.load(run.paths.ticket_weights(key))["masks"]
        assert int(row["active_params"]) == sum(int(m.sum()) for m in mask.values()) == pruning.kept_count(total, target)
        # Every kept weight is at least as salient as every pruned one.
        kept = torch.cat([scores[n][mask[n]] for n in mask])
        pruned = torch.cat([scores[n][~mask[n]] for n in mask])
        assert kept.min() >= pruned.max()
        assert 0.02 < float(row["test_recall@20"]) < 1  # trained: a random ranking is ~0.012

    # Different batches give a different criterion (and the same batches the same masks).
    assert not all(torch.equal(a, b) for a, b in zip(grads.values(), snip.init_gradients(run, 1).values()))
    assert all(torch.equal(a, b) for a, b in zip(grads.values(), snip.init_gradients(run, 2).values()))


def test_snip_batches_is_checked():
    with pytest.raises(ConfigError) as err:
        api.settings_for("BPR", "ml-100k", "snip", config_dict={"snip_batches": 0})
    assert err.value.key == "snip_batches"
