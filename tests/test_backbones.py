"""Backbones: the declared ones agree with the mask core, and any RecBole
general recommender with embedding tables runs the mask methods undeclared."""
from __future__ import annotations

import pytest

from recbole_lth import backbones
from recbole_lth.core import tasks
from recbole_lth.engine import builder

DECLARED = list(backbones.BACKBONES)


@pytest.fixture
def tiny_model(tiny_data, tiny_sequences):
    def build(model_name, **extra):
        sequential = tasks.for_model(model_name) is tasks.SEQUENTIAL
        data_path, dataset = tiny_sequences if sequential else tiny_data
        extra = {"load_col": None, "train_neg_sample_args": None, **extra} if sequential else extra
        settings = {"model": model_name, "dataset": dataset, "data_path": data_path, "state": "ERROR",
                    "show_progress": False, **extra}
        config = builder.recbole_config(settings, data_path)
        _, train, _, _ = builder.load_data(config)
        return config, builder.new_model(config, train.dataset)

    return build


@pytest.mark.parametrize("name", DECLARED)
def test_a_declared_backbone_names_the_tables_the_mask_core_finds(tiny_model, name):
    _, model = tiny_model(name, **({"mlp_hidden_size": [8], "latent_dimension": 4} if name == "MultiVAE" else {}))
    declared = backbones.get(name).tables(model)
    assert declared == backbones.generic_tables(model)
    assert list(backbones.prunable(model, "embeddings")) == list(declared)
    assert backbones.table_axes(model, list(declared)) == declared


# RecBole general recommenders tried on tiny data (1 epoch, one OMP ticket):
# NGCF is declared; DMF, ENMF and SimpleX run undeclared (their tables are
# nn.Embeddings, DMF's an item-sized nn.Linear).  NNCF and DGCF fail inside
# RecBole on data this small (NNCF's max_pool1d output size 0, DGCF samples
# more users than there are), not in the plugin.
GENERIC = ["NGCF", "DMF", "ENMF", "SimpleX"]


@pytest.mark.parametrize("name", GENERIC)
def test_one_omp_ticket_on_a_recbole_general_recommender(tiny_data, tmp_path, name):
    import recbole_lth

    data_path, dataset = tiny_data
    result = recbole_lth.run(model=name, dataset=dataset, method="omp", config_dict={
        "data_path": data_path, "epochs": 1, "state": "ERROR", "show_progress": False, "progress": False,
        "target_sparsities": [0.5], "output_root": str(tmp_path / "runs"),
        "embedding_size": 8})
    ticket = next(r for r in result.rows if r["method"] == "omp")
    assert ticket["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert ticket["nonzero_params"] <= ticket["active_params"] < ticket["prunable_params"]


@pytest.mark.parametrize("method, overrides, missing", [
    ("small_dense", {}, "the width keys small_dense shrinks"),
    ("lcm", {}, "the embedding tables lcm projects"),
    ("omp", {"kd_weight": 1.0}, "its scores before the output activation"),
])
def test_what_needs_a_declaration_is_refused_for_an_undeclared_model(method, overrides, missing):
    from recbole_lth.api import settings_for
    from recbole_lth.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"DMF declares no {missing}"):
        settings_for("DMF", "ml-100k", method, None, {"state": "ERROR", **overrides})
