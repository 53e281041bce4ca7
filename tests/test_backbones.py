"""Backbones: the declared ones agree with the mask core, and any RecBole
general recommender with embedding tables runs the mask methods undeclared."""
from __future__ import annotations

import pytest

from recbole_lth import backbones, builder

DECLARED = list(backbones.BACKBONES)


@pytest.fixture
def tiny_model(tiny_data):
    data_path, dataset = tiny_data

    def build(model_name, **extra):
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
