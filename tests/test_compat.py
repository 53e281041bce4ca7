"""One test per RecBole 1.2.1 breakage handled in recbole_lth.compat.

CI runs this file on numpy 2 / pandas 3 / scipy >= 1.13 and again on
numpy 1.26 / pandas 2 / scipy 1.12 (where most patches have nothing to do).
"""
import sys
import warnings

import numpy as np
import scipy.sparse as sp
import torch

import recbole_lth  # noqa: F401  (applies the patches)
from recbole_lth import compat
from recbole_lth.core import checkpoint
from recbole_lth.engine.builder import bundled_data_path


def _config(model="BPR", **extra):
    from recbole.config import Config

    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        return Config(model=model, dataset="ml-100k", config_dict={
            "data_path": bundled_data_path(), "epochs": 1, "state": "WARNING",
            "embedding_size": 8, "show_progress": False, **extra})
    finally:
        sys.argv = saved


def test_patches_are_idempotent_and_never_import_quick_start():
    import pandas as pd
    from recbole.data.dataset import dataset as dataset_module
    from recbole.trainer import trainer as trainer_module

    # Applied on import; applying any patch again finds nothing left to change
    # and leaves the patched objects as they are.
    before = (trainer_module.torch, dataset_module.pd, dataset_module.Dataset._fill_nan,
              dataset_module.Dataset._data_processing, sp.dok_matrix._update)
    assert not any((compat.patch_numpy_aliases(), compat.patch_scipy_dok_update(), compat.patch_torch_load(),
                    compat.patch_pandas_fillna()))
    after = (trainer_module.torch, dataset_module.pd, dataset_module.Dataset._fill_nan,
             dataset_module.Dataset._data_processing, sp.dok_matrix._update)
    assert all(a is b for a, b in zip(before, after))
    assert trainer_module.torch is not torch and trainer_module.torch.Tensor is torch.Tensor  # torch >= 2.6
    assert (dataset_module.pd is not pd) and dataset_module.pd.DataFrame is pd.DataFrame
    assert "recbole.quick_start" not in sys.modules
    assert "ray" not in sys.modules


def test_numpy_aliases_let_recbole_config_build():
    config = _config()  # Config.compatibility_settings reads np.float_ etc.
    assert config["model"] == "BPR"
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.bool8 is np.bool_
    assert np.float is np.float64  # set by RecBole itself, used in its metrics


def test_dok_update_and_lightgcn_adjacency():
    m = sp.dok_matrix((3, 3), dtype=np.float32)
    m._update({(0, 1): 1.0, (2, 0): 2.0})
    assert m.toarray().tolist() == [[0, 1, 0], [0, 0, 0], [2, 0, 0]]

    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender.lightgcn import LightGCN

    config = _config("LightGCN")
    train, _, _ = data_preparation(config, create_dataset(config))
    model = LightGCN(config, train.dataset)
    adj = model.norm_adj_matrix.to_dense()
    # Reference: symmetric D^-1/2 A D^-1/2 of the user-item bipartite graph.
    inter = train.dataset.inter_matrix(form="coo").astype(np.float32)
    n = model.n_users + model.n_items
    a = sp.bmat([[sp.csr_matrix((model.n_users, model.n_users)), inter], [inter.T, sp.csr_matrix((model.n_items, model.n_items))]]).tocsr()
    assert a.shape == (n, n)
    a.data[:] = 1.0
    degree = np.asarray(a.sum(axis=1)).ravel() + 1e-7
    d = sp.diags(degree ** -0.5)
    expected = torch.tensor((d @ a @ d).toarray(), dtype=torch.float32)
    assert torch.allclose(adj, expected, atol=1e-6)


def test_recbole_checkpoints_load_and_ours_are_weights_only(tmp_path):
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender.bpr import BPR
    from recbole.trainer import Trainer

    config = _config(checkpoint_dir=str(tmp_path))
    train, valid, _ = data_preparation(config, create_dataset(config))
    model = BPR(config, train.dataset)
    trainer = Trainer(config, model)
    trainer._save_checkpoint(0, verbose=False)  # pickles RecBole's Config
    before = model.item_embedding.weight.detach().clone()
    metrics = trainer.evaluate(valid, load_best_model=False)
    with torch.no_grad():
        model.item_embedding.weight.zero_()
    trainer.resume_checkpoint(trainer.saved_model_file)  # torch.load inside RecBole
    assert torch.equal(model.item_embedding.weight, before)
    with torch.no_grad():
        model.item_embedding.weight.zero_()
    assert trainer.evaluate(valid, load_best_model=True) == metrics  # torch.load again, the saved weights back

    path = tmp_path / "ours.pt"
    checkpoint.save(path, state_dict=model.state_dict(), masks={"w": before > 0}, meta={"epoch": 3})
    loaded = torch.load(path, weights_only=True)
    assert loaded["meta"]["epoch"] == 3 and torch.equal(loaded["state_dict"]["item_embedding.weight"], before)


def test_nan_filling_works_under_copy_on_write(tmp_path):
    from recbole.data import create_dataset

    folder = tmp_path / "tiny"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\trating:float"]
    for u in range(1, 7):
        for i in range(1, 6):
            rating = "" if (u + i) % 4 == 0 else str((u * i) % 5 + 1)
            rows.append(f"{u}\t{i}\t{rating}")
    (folder / "tiny.inter").write_text("\n".join(rows) + "\n")
    (folder / "tiny.item").write_text(
        "item_id:token\tprice:float\tgenre:token_seq\n1\t1.0\ta b\n2\t\t\n3\t3.0\tc\n4\t\tb\n5\t5.0\t\n"
    )
    from recbole.config import Config

    saved, sys.argv = sys.argv, sys.argv[:1]
    try:
        config = Config(model="BPR", dataset="tiny", config_dict={
            "data_path": str(tmp_path), "state": "WARNING", "load_col": None,
            "user_inter_num_interval": None, "item_inter_num_interval": None})
    finally:
        sys.argv = saved
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.silence_known_warnings()  # what the plugin's import does; patch 4 fills what it hides
        dataset = create_dataset(config)
    assert not [str(w.message) for w in caught if "chained assignment" in str(w.message)]
    assert not dataset.inter_feat["rating"].isna().any()
    assert not dataset.item_feat["price"].isna().any()
    assert dataset.item_feat["price"].tolist().count(3.0) >= 3  # NaN -> mean of 1, 3, 5
    genres = [np.asarray(g) for g in dataset.item_feat["genre"]]
    assert any(len(g) == 0 for g in genres)  # missing sequence -> empty, not a crash


def test_recbole_config_takes_gloo_and_the_cpu_once_per_process(tmp_path):
    """Compatibility patch 7: RecBole's distributed Config on a machine without CUDA."""
    import torch
    import torch.distributed as dist
    from recbole.config import Config

    from recbole_lth.engine import distributed
    import recbole.trainer.trainer as recbole_trainer

    keys = {"local_rank": 0, "world_size": 1, "nproc": 1, "offset": 0, "ip": "127.0.0.1",
            "port": distributed.free_port(), "gpu_id": "", "checkpoint_dir": str(tmp_path), "state": "ERROR"}
    try:
        first = Config(model="BPR", dataset="ml-100k", config_dict=keys)
        second = Config(model="BPR", dataset="ml-100k", config_dict=keys)  # RecBole would init the group again
        assert dist.get_backend() == "gloo" and first["device"] == torch.device("cpu")
        assert first["single_spec"] is False and second["single_spec"] is False
        wrapped = recbole_trainer.DistributedDataParallel(torch.nn.Linear(3, 2), device_ids=[0])
        assert wrapped.device_ids is None  # torch refuses device ids for a CPU module
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_looking_up_a_sequential_model_leaves_anomaly_detection_off():
    """Compatibility patch 8: RecBole's sine.py turns torch's anomaly detection on at import."""
    import subprocess
    import sys

    code = ("from recbole.utils import get_model; "
            "get_model('SASRec'); get_model('SINE'); print(torch.is_anomaly_enabled())")
    with_plugin = subprocess.run([sys.executable, "-c", "import torch, recbole_lth; " + code], capture_output=True,
                                 text=True, timeout=120)
    assert with_plugin.stdout.strip().splitlines()[-1] == "False", with_plugin.stderr[-1000:]
    bare = subprocess.run([sys.executable, "-c", "import torch; " + code], capture_output=True, text=True,
                          timeout=120)
    assert bare.stdout.strip().splitlines()[-1] == "True"  # RecBole alone: the breakage the patch mends


def test_use_gpu_false_gives_the_cpu_whatever_gpu_id_says(monkeypatch, tmp_path):
    """Compatibility patch 9: RecBole 1.2.1 never reads use_gpu (found on the GPU machine)."""
    import torch
    from recbole.config import Config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    keys = {"gpu_id": "0", "checkpoint_dir": str(tmp_path), "state": "ERROR"}
    assert Config(model="BPR", dataset="ml-100k", config_dict={**keys, "use_gpu": False})["device"].type == "cpu"
    assert Config(model="BPR", dataset="ml-100k", config_dict=keys)["device"].type == "cuda"
