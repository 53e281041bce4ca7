"""Shared test helpers: short runs on RecBole's bundled ml-100k."""
from __future__ import annotations

import pytest

import recbole_lth

# Small but real: 1-3 epochs, full-sort evaluation, no progress bars.
QUICK = {
    "epochs": 2,
    "stopping_step": 5,
    "state": "WARNING",
    "show_progress": False,
    "train_batch_size": 4096,
    "eval_batch_size": 40960,
    "embedding_size": 16,
}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # RecBole writes log_tensorboard/ into the working directory.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def quick_run(tmp_path):
    """``quick_run(model, method, **overrides)`` -> RunResult in tmp_path."""

    def _run(model="BPR", method="imp", dataset="ml-100k", **overrides):
        settings = {**QUICK, "output_root": str(tmp_path / "runs"), **overrides}
        return recbole_lth.run(model=model, dataset=dataset, method=method, config_dict=settings)

    return _run
