"""``seeds``: one ordinary run per seed in one study folder, the statistics
over them, the same study in parallel, and every bad input refused."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

import recbole_lth
from recbole_lth.cli import main
from recbole_lth.core import paths
from recbole_lth.engine import parallel
from tests.test_parallel import STUDY, assert_same_run

SEEDED = {**STUDY, "target_sparsities": [0.5]}
SEEDS = [2020, 2021]


def _summary(root: Path) -> list[dict]:
    with open(paths.StudyPaths(root).summary_csv, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds") / "study"
    return recbole_lth.run(model="BPR", dataset="ml-100k", method=["omp", "rp"],
                           config_dict={**SEEDED, "seeds": SEEDS, "run_dir": str(root)})


def test_each_seed_is_an_ordinary_run_and_the_summary_pairs_them(study, tmp_path):
    root = Path(study.run_dir)
    study_paths = paths.StudyPaths(root)
    for part in (study_paths.summary_csv, study_paths.summary_md, study_paths.summary_tex, study_paths.curve,
                 study_paths.settings):
        assert part.is_file(), part
    assert sorted(study.seed_runs) == SEEDS and {r["seed"] for r in study.rows} == set(SEEDS)
    # A seed's run is the run that seed gives alone.
    alone = recbole_lth.run(model="BPR", dataset="ml-100k", method=["omp", "rp"],
                            config_dict={**SEEDED, "seed": 2021, "run_dir": str(tmp_path / "alone")})
    assert_same_run(study_paths.seed_run(2021), alone.run_dir)
    stored = paths.read_json(paths.RunPaths(study_paths.seed_run(2021)).settings)
    assert stored["seed"] == 2021 and stored["seeds"] is None
    # The seeds differ (initial weights, order, negatives) ...
    dense = {seed: next(r for r in result.rows if r["ticket"] == "dense")
             for seed, result in study.seed_runs.items()}
    assert dense[2020]["test_recall@20"] != dense[2021]["test_recall@20"]
    # ... and the summary is their mean and their paired difference.
    rows = {r["ticket"]: r for r in _summary(root)}
    assert list(rows) == ["dense", "omp_0.5", "rp_0.5"]
    omp = {seed: next(r for r in result.rows if r["ticket"] == "omp_0.5") for seed, result in study.seed_runs.items()}
    mean = sum(omp[s]["test_recall@20"] for s in SEEDS) / 2
    delta = sum(omp[s]["test_recall@20"] - dense[s]["test_recall@20"] for s in SEEDS) / 2
    assert float(rows["omp_0.5"]["test_recall@20_mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(rows["omp_0.5"]["test_recall@20_delta"]) == pytest.approx(delta, abs=1e-9)
    assert rows["omp_0.5"]["n"] == "2" and rows["dense"]["verdict"] == "reference"


def test_the_same_seeds_in_parallel_give_the_same_summary(study, tmp_path):
    root = tmp_path / "parallel"
    recbole_lth.run(model="BPR", dataset="ml-100k", method=["omp", "rp"],
                    config_dict={**SEEDED, "seeds": SEEDS, "run_dir": str(root), "workers": 2})
    assert paths.StudyPaths(root).summary_csv.read_text() == paths.StudyPaths(study.run_dir).summary_csv.read_text()
    for seed in SEEDS:
        assert_same_run(paths.StudyPaths(study.run_dir).seed_run(seed), paths.StudyPaths(root).seed_run(seed))


def test_the_default_study_folder_is_named_by_the_settings_without_the_seed():
    from recbole_lth import api
    from recbole_lth.api import Request

    one = api.plan_study(Request("BPR", "ml-100k", "omp", config_dict={"seeds": [1, 2]}))
    more = api.plan_study(Request("BPR", "ml-100k", "omp", config_dict={"seeds": [1, 2, 3]}))
    other = api.plan_study(Request("BPR", "ml-100k", "omp", config_dict={"seeds": [1, 2], "learning_rate": 0.01}))
    assert one.root == more.root != other.root  # adding a seed reuses the seeds already run
    assert one.root.name.startswith("BPR-ml-100k-omp-") and one.root.name.endswith("-seeds")
    assert [Path(j.request.config_dict["run_dir"]).name for j in more.jobs] == ["seed_1", "seed_2", "seed_3"]
    # A plain run's folder is what it was before seeds existed: the new keys are not hashed.
    assert api.default_run_dir(api.settings_for("BPR", "ml-100k", "omp")[0]) == \
        api.default_run_dir(api.settings_for("BPR", "ml-100k", "omp", config_dict={"workers": 2})[0])


@pytest.mark.parametrize("args, key", [
    (["--seeds=[]"], "seeds"),
    (["--seeds=[1,1]"], "seeds"),
    (["--seeds=[1.5]"], "seeds"),
    (["--seeds=x"], "seeds"),
    (["--seeds=[1,2]", "--seed=3"], "seed"),
    (["--workers=0"], "workers"),
    (["--workers=2.5"], "workers"),
    (["--worker_threads=0"], "worker_threads"),
    (["--executor=foo"], "executor"),
    (["--executor=ray", "--ray_address=127.0.0.1:9"], "ray_address"),
    (["--ray_address=127.0.0.1:6379"], "ray_address"),
    (["--workers=2", "--nproc=2"], "nproc"),
    (["--seeds=[1,2]", "--nproc=2"], "nproc"),
])
def test_bad_seeds_and_workers_are_one_line_and_exit_2_before_anything_is_written(args, key, tmp_path, capsys):
    code = main(["--model=BPR", "--dataset=ml-100k", "--method=omp", f"--output_root={tmp_path / 'out'}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{key}=" in err[0], err
    assert not (tmp_path / "out").exists()


def test_more_workers_than_cores_is_a_warning_not_an_error():
    cores = os.cpu_count() or 1
    assert parallel.check({"workers": cores + 1, "executor": "local", "use_gpu": False}) == [
        f"workers={cores + 1} is above this machine's {cores} cores: tickets will share cores"]
    assert parallel.check({"workers": cores, "executor": "local", "use_gpu": False}) == []


def test_more_workers_than_gpus_is_refused(monkeypatch):
    from recbole_lth.core.errors import ConfigError

    monkeypatch.setattr(parallel, "gpu_ids", lambda settings: ["0", "1"])
    assert parallel.check({"workers": 2, "executor": "local"}) == []
    with pytest.raises(ConfigError, match="at most 2, one worker per GPU") as err:
        parallel.check({"workers": 3, "executor": "local"})
    assert err.value.key == "workers"


@pytest.mark.parametrize("reply", [None, b"HTTP/1.0 400 Bad request\r\n\r\n"])
def test_a_ray_address_where_another_program_listens_is_refused_in_one_line(reply, tmp_path, capsys):
    """A listener that is not Ray's gRPC server passed the connect check and
    then left ray.init waiting past two minutes (issue 35)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        if reply:
            conn.recv(64)
            conn.sendall(reply)
        threading.Event().wait(5)  # silent: holds the connection open
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        code = main(["--model=BPR", "--dataset=ml-100k", "--method=omp", f"--output_root={tmp_path / 'out'}",
                     "--executor=ray", f"--ray_address=127.0.0.1:{port}"])
    finally:
        server.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ray_address=" in err[0], err
    assert ("did not answer as Ray's gRPC server" if reply is None else "another program listens") in err[0]
    assert not (tmp_path / "out").exists()
