"""LightGCN's bipartite CSR propagation (``fast_propagation``) computes
RecBole's forward: the same embeddings, gradients and metrics within float
rounding, with RecBole's class and state dict."""
from __future__ import annotations

import csv

import pytest
import torch

import recbole_lth
from recbole_lth.engine import builder
from conftest import quick_settings

# Measured on ml-100k and the tiny set: forward and gradients agree to ~1e-8
# absolute on values of ~1e-2 (summation order only).
ATOL = 1e-6


@pytest.fixture
def lightgcn(tiny_data):
    data_path, dataset = tiny_data

    def build(**extra):
        settings = {"model": "LightGCN", "dataset": dataset, "data_path": data_path, "state": "ERROR",
                    "show_progress": False, "embedding_size": 8, **extra}
        config = builder.recbole_config(settings, data_path)
        _, train, _, _ = builder.load_data(config)
        return builder.new_model(config, train.dataset)

    return build


def _recbole_forward(model):
    return type(model).forward(model)  # the class's method: RecBole's own forward


def _gradients(model, forward, weights):
    model.zero_grad()
    users, items = forward()
    ((users * weights[0]).sum() + (items * weights[1]).sum()).backward()
    return [p.grad.clone() for p in (model.user_embedding.weight, model.item_embedding.weight)]


def test_the_forward_and_its_gradients_are_recboles(lightgcn):
    model = lightgcn(n_layers=3)
    assert "forward" in vars(model)  # accelerated by default
    with torch.no_grad():
        fast, slow = model.forward(), _recbole_forward(model)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(t.shape, generator=generator) for t in slow]
    for a, b in zip(_gradients(model, model.forward, weights), _gradients(model, lambda: _recbole_forward(model),
                                                                             weights)):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_a_layer_is_not_skipped(lightgcn):
    # One layer less gives other embeddings: the tolerance above can fail.
    model = lightgcn(n_layers=2)
    fast = model.forward()[0]
    model.n_layers = 1
    assert (fast - _recbole_forward(model)[0]).abs().max() > 100 * ATOL


def test_off_keeps_recboles_forward_and_the_state_dict_is_recboles(lightgcn):
    fast, plain = lightgcn(), lightgcn(fast_propagation=False)
    assert "forward" not in vars(plain) and not hasattr(plain, "bipartite_graph")
    assert list(fast.state_dict()) == list(plain.state_dict())
    for key, value in fast.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key])


def test_a_trained_ticket_scores_as_with_recboles_forward(tmp_path):
    # 3 epochs of a dense and an OMP ticket on ml-100k: every metric in
    # results.csv (4 decimals) is the same with and without the fast path.
    rows = {}
    for fast in (True, False):
        settings = quick_settings("LightGCN", output_root=str(tmp_path / str(fast)), epochs=3,
                                  target_sparsities=[0.5], fast_propagation=fast, progress=False)
        result = recbole_lth.run(model="LightGCN", dataset="ml-100k", method="omp", config_dict=settings)
        with open(result.results_csv) as f:
            rows[fast] = [{k: v for k, v in row.items() if "recall" in k or "ndcg" in k} for row in csv.DictReader(f)]
    assert len(rows[True]) == 2 and rows[True][0]
    assert rows[True] == rows[False]


def test_one_propagation_per_loss_keeps_the_fast_forward(lightgcn):
    # Distillation shares one propagation between a loss's parts, then puts
    # the model's own forward back: the fast one, not RecBole's class method.
    from recbole_lth.sparse.scoring import propagate_once

    model = lightgcn()
    fast = model.forward
    with propagate_once(model):
        assert model.forward() is model.forward()
    assert model.forward == fast and "forward" in vars(model)


def test_a_copied_model_propagates_with_its_own_weights(lightgcn):
    import copy

    model = lightgcn()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.user_embedding.weight.mul_(2)
        twin.item_embedding.weight.mul_(2)
        torch.testing.assert_close(twin.forward()[0], 2 * model.forward()[0], atol=ATOL, rtol=0)
