"""Tuning with RecBole's params-file format: one run per trial, tuning.csv, resume."""
import csv

import pytest

from recbole_lth import tune
from recbole_lth.cli import main
from recbole_lth.errors import ConfigError


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
