"""Tuning with RecBole's params-file format: one run per trial, tuning.csv, resume."""
import csv

import pytest

from recbole_lth import tune
from recbole_lth.cli import main
from recbole_lth.core.errors import ConfigError


def test_params_file_format(tmp_path):
    path = tmp_path / "params.hyper"
    path.write_text("learning_rate loguniform -8,0\nembedding_size choice [32,64]\n# a comment\n"
                    "dsl_init_ratio uniform 0.3,0.5\nkd_topk quniform 5,20,5\nmlp_hidden_size choice [[64],[128,64]]\n")
    space = tune.read_params_file(path)
    assert space == {"learning_rate": ("loguniform", [-8.0, 0.0]), "embedding_size": ("choice", [32, 64]),
                     "dsl_init_ratio": ("uniform", [0.3, 0.5]), "kd_topk": ("quniform", [5.0, 20.0, 5.0]),
                     "mlp_hidden_size": ("choice", [[64], [128, 64]])}
    path.write_text("learning_rate loguniform 0\n")
    with pytest.raises(ConfigError, match="params_file"):
        tune.read_params_file(path)


def test_tune_runs_one_search_per_trial_and_resumes(tmp_path, capsys, trained_keys):
    params = tmp_path / "params.hyper"
    params.write_text("learning_rate choice [0.01,0.05]\n")
    args = ["tune", f"--params_file={params}", "--max_evals=2", "--model=BPR", "--dataset=ml-100k", "--method=rp",
            "--target_sparsities=[0.5]", "--epochs=2", "--state=WARNING", "--embedding_size=8",
            f"--tune_dir={tmp_path / 'tune'}"]
    assert main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "tune" / "tuning.csv")))
    assert [r["trial"] for r in rows] == ["0", "1"] and all(r["state"] == "complete" for r in rows)
    assert all(r["param[learning_rate]"] in ("0.01", "0.05") for r in rows)
    assert all(r["tickets"] == "rp_0.5" and float(r["objective"]) == float(r["valid_recall@20"]) for r in rows)
    assert all(float(r["test_recall@20"]) > 0 for r in rows)
    assert (tmp_path / "tune" / "trial_000" / "results.csv").is_file()
    trained = list(trained_keys)
    assert main(args) == 0  # resumed: both trials are finished, nothing runs again
    assert trained_keys == trained
    assert len(list(csv.DictReader(open(tmp_path / "tune" / "tuning.csv")))) == 2


def test_a_misspelt_parameter_is_refused(tmp_path, capsys):
    params = tmp_path / "params.hyper"
    params.write_text("lerning_rate choice [0.01,0.05]\n")
    assert main(["tune", f"--params_file={params}", "--model=BPR", "--dataset=ml-100k",
                 f"--tune_dir={tmp_path / 'tune'}"]) == 2
    assert "unknown key lerning_rate" in capsys.readouterr().err


# ------------------------------------------------------------ resuming, faults
# The subprocess kills itself (SIGKILL) when trial 1 starts training its rp ticket: mid-trial, deterministically.
KILLED_IN_TRIAL_1 = """
import os, signal, sys
from recbole_lth import cli
from recbole_lth.engine.run import Run
original = Run._train
def train(self, key, *args, **kwargs):
    if self.paths.root.name == "trial_001" and key == "rp_0.5":
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, key, *args, **kwargs)
Run._train = train
sys.exit(cli.main(sys.argv[1:]))
"""


def _tiny_args(tmp_path, tiny_data, tune_dir, max_evals=3, params="learning_rate loguniform -6,-2\n"):
    data_path, dataset = tiny_data
    path = tmp_path / "params.hyper"
    path.write_text(params)
    return ["tune", f"--params_file={path}", f"--max_evals={max_evals}", "--model=BPR", f"--dataset={dataset}",
            f"--data_path={data_path}", "--method=rp", "--target_sparsities=[0.5]", "--epochs=2", "--state=WARNING",
            "--embedding_size=8", "--progress=False", f"--tune_dir={tune_dir}"]


def _rows(tune_dir):
    return list(csv.DictReader(open(tune_dir / "tuning.csv")))


def test_a_killed_study_resumes_as_the_uninterrupted_one(tmp_path, tiny_data):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import optuna

    import recbole_lth

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(recbole_lth.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_TRIAL_1, *_tiny_args(tmp_path, tiny_data, killed)],
                          env=env, cwd=tmp_path, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert [r["trial"] for r in _rows(killed)] == ["0"]
    assert main(_tiny_args(tmp_path, tiny_data, killed)) == 0
    assert main(_tiny_args(tmp_path, tiny_data, tmp_path / "whole")) == 0
    resumed, whole = _rows(killed), _rows(tmp_path / "whole")
    assert [r["trial"] for r in resumed] == ["0", "1", "2", "3"] and resumed[1]["state"] == "interrupted"
    assert resumed[2]["param[learning_rate]"] == resumed[1]["param[learning_rate]"]  # retried
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(killed / "study.log")))
    states = [t.state for t in optuna.load_study(study_name="recbole_lth", storage=storage).trials]
    assert states[1] == optuna.trial.TrialState.FAIL and optuna.trial.TrialState.RUNNING not in states

    def comparable(rows):
        return [{k: v for k, v in r.items() if k not in ("trial", "run_dir", "seconds") and v != ""}
                for r in rows if r["state"] != "interrupted"]

    # Every evaluated trial as in the uninterrupted study: values (no replay), states, objectives, metrics.
    assert comparable(resumed) == comparable(whole)
    assert len({r["param[learning_rate]"] for r in whole}) == 3
    assert [r["state"] for r in whole] == ["complete", "complete", whole[2]["state"]]


# Killed in trial 1 between its two draws: Optuna's journal holds learning_rate only.
KILLED_BETWEEN_DRAWS = """
import os, signal, sys
import optuna
from recbole_lth import cli
original = optuna.trial.Trial.suggest_categorical
def suggest(self, name, choices):
    if self.number == 1 and name == "embedding_size":
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, name, choices)
optuna.trial.Trial.suggest_categorical = suggest
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_trial_killed_between_two_draws_is_drawn_again_as_the_uninterrupted_one(tmp_path, tiny_data):
    """Issue 35 item 11: re-queuing the drawn half gave embedding_size 16
    where the uninterrupted study drew 8."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import recbole_lth

    params = "learning_rate loguniform -6,-2\nembedding_size choice [4,8,16]\n"
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = {**os.environ, "PYTHONPATH": str(Path(recbole_lth.__file__).resolve().parents[1])}
    args = [a for a in _tiny_args(tmp_path, tiny_data, killed, params=params) if not a.startswith("--embedding")]
    proc = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_DRAWS, *args], env=env, cwd=tmp_path,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert main(args) == 0
    assert main([a.replace(str(killed), str(whole)) for a in args]) == 0

    def drawn(rows):
        return [(r["param[learning_rate]"], r["param[embedding_size]"], r["state"], r.get("objective"))
                for r in rows if r["state"] != "interrupted"]

    resumed = _rows(killed)
    assert [r["state"] for r in resumed].count("interrupted") == 1 and resumed[1]["state"] == "interrupted"
    assert drawn(resumed) == drawn(_rows(whole))
    assert len({r["param[embedding_size]"] for r in _rows(whole)} | {r["param[learning_rate]"] for r in _rows(whole)}) > 3


def test_a_diverged_trial_is_a_failed_row_and_the_study_goes_on(tmp_path, tiny_data, monkeypatch):
    from recbole_lth import api
    from recbole_lth.core.errors import TrainingDiverged

    real_run = api.run_request

    def diverging(request, **kwargs):
        if request.config_dict["run_dir"].endswith("trial_000"):
            raise TrainingDiverged("ticket dense (round 0): the training loss became NaN in epoch 0")
        return real_run(request, **kwargs)

    monkeypatch.setattr(api, "run_request", diverging)
    assert main(_tiny_args(tmp_path, tiny_data, tmp_path / "tune", max_evals=2)) == 0
    rows = _rows(tmp_path / "tune")
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "failed"), ("1", "complete")]
    assert "NaN" in rows[0]["note"] and rows[0]["objective"] == "" and float(rows[1]["objective"]) > 0


def test_a_second_tune_process_is_refused(tmp_path, tiny_data, capsys, trained_keys):
    from filelock import FileLock

    tune_dir = tmp_path / "tune"
    tune_dir.mkdir()
    held = FileLock(tune_dir / "tune.lock", timeout=0)
    held.acquire()  # another process (a second lock object behaves as one)
    try:
        assert main(_tiny_args(tmp_path, tiny_data, tune_dir)) == 2
    finally:
        held.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another recbole_lth process is running in it (tune.lock)" in err[0]
    assert trained_keys == [] and not (tune_dir / "study.log").exists()


@pytest.mark.parametrize("params, extra, refused", [
    ("learning_rate choice [0.01]\nembedding_size choice [8,0]\n", [], "embedding_size=0"),
    ("rewind_epoch quniform 0,5,1\n", [], "rewind_epoch=5"),
    # trials run in one process: refused before study.log and tune.lock are written (issue 35, item 12)
    ("workers choice [1,2]\n", [], "workers=2"),
    ("learning_rate choice [0.01]\n", ["--workers=2"], "workers=2"),
    ("learning_rate choice [0.01]\n", ["--executor=ray"], "executor='ray'"),
    ("learning_rate choice [0.01]\n", ["--seeds=[1,2]"], "seeds="),
    ("learning_rate choice [0.01]\n", ["--nproc=2"], "nproc=2"),
])
def test_every_value_of_every_range_is_checked_before_the_first_trial(params, extra, refused, tmp_path, tiny_data,
                                                                       capsys, trained_keys):
    assert main([*_tiny_args(tmp_path, tiny_data, tmp_path / "tune", params=params), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and refused in err[0]
    assert trained_keys == [] and not (tmp_path / "tune").exists()


def test_tune_without_a_params_file_is_one_line(tmp_path, capsys):
    assert main(["tune", "--model=BPR", "--dataset=ml-100k", f"--tune_dir={tmp_path / 'tune'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid params_file=None" in err[0]
