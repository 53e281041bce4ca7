"""Shared test helpers: short runs on RecBole's bundled ml-100k."""
from __future__ import annotations

import pytest
import torch

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


# Models without an embedding_size key (RecBole's Config defines none for them,
# and the plugin refuses keys the model does not have): small sizes of their own.
OWN_SIZES = {
    "NeuMF": {"mf_embedding_size": 16, "mlp_embedding_size": 16, "mlp_hidden_size": [16]},
    "MultiVAE": {"mlp_hidden_size": [64], "latent_dimension": 16},
}


def quick_settings(model: str, **overrides) -> dict:
    """QUICK for ``model``: its own size keys where it has no embedding_size."""
    settings = {**QUICK, **OWN_SIZES.get(model, {}), **overrides}
    if model in OWN_SIZES and "embedding_size" not in overrides:
        settings.pop("embedding_size")
    return settings


@pytest.fixture
def quick_run(tmp_path):
    """``quick_run(model, method, **overrides)`` -> RunResult in tmp_path."""

    def _run(model="BPR", method="imp", dataset="ml-100k", **overrides):
        settings = quick_settings(model, output_root=str(tmp_path / "runs"), **overrides)
        return recbole_lth.run(model=model, dataset=dataset, method=method, config_dict=settings)

    return _run


@pytest.fixture
def tiny_data(tmp_path):
    """A small synthetic dataset (80 users x 60 items, 15 interactions each) in
    RecBole's atomic format: ``(data_path, "tiny")``."""
    import random

    rng = random.Random(0)
    folder = tmp_path / "data" / "tiny"
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token"]
    for user in range(1, 81):
        # Two taste groups, so that there is something to learn.
        pool = range(1, 31) if user % 2 else range(31, 61)
        lines += [f"{user}\t{item}" for item in rng.sample(list(pool), 15)]
    (folder / "tiny.inter").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "data"), "tiny"


@pytest.fixture
def tiny_sequences(tmp_path):
    """``(data_path, "tinyseq")``: :func:`write_tiny_sequences` under tmp_path."""
    return write_tiny_sequences(tmp_path)


def write_tiny_sequences(root):
    """Tiny time-ordered histories for sequential models (60 users, 40 items,
    12 steps each; a user walks its group's items in order, so the next item
    is learnable): ``(data_path, "tinyseq")``."""
    import random

    rng = random.Random(0)
    folder = root / "data" / "tinyseq"
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, 61):
        base, start = (1 if user % 2 else 21), rng.randrange(20)
        lines += [f"{user}\t{base + (start + t) % 20}\t{1000 * user + t}" for t in range(12)]
    (folder / "tinyseq.inter").write_text("\n".join(lines) + "\n")
    return str(root / "data"), "tinyseq"


# Sequential settings the tests afford: RecBole's SASRec takes minutes an epoch
# on ml-100k here, so tiny histories, short windows and small layers.
SEQUENTIAL_QUICK = {"MAX_ITEM_LIST_LENGTH": 8, "hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 2,
                    "embedding_size": 16, "topk": [5, 10], "valid_metric": "Recall@10", "train_batch_size": 256}


def sequential_settings(model: str, **overrides) -> dict:
    """SEQUENTIAL_QUICK, keeping only the keys RecBole defines for ``model``."""
    from recbole_lth.engine import builder

    known = builder.recbole_keys(model, "tinyseq")
    picked = {k: v for k, v in SEQUENTIAL_QUICK.items() if k in known or k in ("topk", "valid_metric")}
    return {"epochs": 1, "state": "ERROR", "show_progress": False, "progress": False, "load_col": None, **picked,
            **overrides}


@pytest.fixture
def trained_keys(monkeypatch):
    """The keys of the tickets trained (not loaded) from now on, in order."""
    from recbole_lth.engine.run import Run

    keys = []
    original = Run._train

    def counting(self, key, *args, **kwargs):
        keys.append(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(Run, "_train", counting)
    return keys


def trace_pep_records(monkeypatch) -> tuple[list, dict]:
    """Host-side, literal reference for PEP's bookkeeping, recorded beside the real one.

    Returns ``(counted_at, reference)``: the steps at which a search counted, and per
    search (``id``) and target index the margins |V| - sigmoid(s) at the first counted
    step whose nonzero count is at most that target's ticket's.
    """
    from recbole_lth.core.pruning import kept_count
    from recbole_lth.methods import pep

    counted_at, reference = [], {}
    record = pep.PepSearch.record

    def traced(self):
        record(self)
        counted_at.append(self.step)
        margins = torch.cat([(self.originals[n].abs() - torch.sigmoid(self.thresholds[n].s)).flatten()
                             for n in self.originals])
        for t, target in enumerate(self.targets):
            if t not in reference.setdefault(id(self), {}) and int((margins > 0).sum()) <= kept_count(
                    margins.numel(), target):
                reference[id(self)][t] = margins.clone()

    monkeypatch.setattr(pep.PepSearch, "record", traced)
    return counted_at, reference
