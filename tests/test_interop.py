"""RecBole checkpoints out and in: load_data_and_model opens an exported ticket and
reproduces its test metrics; a model saved by RecBole's trainer can be the teacher."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recbole_lth.cli import main
from recbole_lth.core import paths
from recbole_lth.core.errors import ConfigError
from recbole_lth.engine import builder

from conftest import quick_settings

# A user's own script: RecBole's tools only (recbole_lth imported for its
# compatibility patches on today's numpy/pandas/torch).
LOADER = r"""
import json, sys
import recbole_lth  # noqa: F401
from recbole.quick_start import load_data_and_model
from recbole.utils import get_trainer
from recbole.utils.case_study import full_sort_topk

out = {}
for path in json.loads(sys.argv[1]):
    config, model, dataset, train, valid, test = load_data_and_model(path)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    uids = dataset.token2id(dataset.uid_field, ["1", "2"])
    scores, items = full_sort_topk(uids, model, test, k=5, device=config["device"])
    out[path] = {"metrics": {k: float(v) for k, v in result.items()}, "topk": list(items.shape)}
print("RESULT " + json.dumps(out))
"""

CASES = [("BPR", "omp", "omp_0.5"), ("LightGCN", "omp", "omp_0.5"), ("NeuMF", "omp", "omp_0.5"),
         ("MultiVAE", "omp", "omp_0.5"), ("CDAE", "omp", "omp_0.5"), ("BPR", "small_dense", "small_dense_0.5"),
         ("LightGCN", "lcm", "lcm_0.5")]


def test_recbole_checkpoint_round_trip_gives_the_tickets_test_metrics(tmp_path):
    exported, expected = [], {}
    for model, method, ticket in CASES:
        run_dir = tmp_path / f"{model}-{method}"
        settings = quick_settings(model, epochs=1, learning_rate=0.01, target_sparsities=[0.5],
                                  **({"train_batch_size": 128} if model in ("MultiVAE", "CDAE") else {}))
        args = [f"--model={model}", "--dataset=ml-100k", f"--method={method}", f"--run_dir={run_dir}"]
        args += [f"--{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in settings.items()]
        assert main(args) == 0
        out = tmp_path / f"{model}-{ticket}.pth"
        assert main(["export", str(run_dir), ticket, "--format", "recbole", "--out", str(out)]) == 0
        exported.append(str(out))
        row = paths.read_json(paths.RunPaths(run_dir).ticket_result(ticket))
        expected[str(out)] = {k[len("test_"):]: v for k, v in row.items() if k.startswith("test_")}
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(exported)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, done.stderr[-3000:]
    results = json.loads(line[len("RESULT "):])
    for path in exported:
        assert results[path]["metrics"] == pytest.approx(expected[path], abs=0), path  # exactly
        assert results[path]["topk"] == [2, 5]


def _recbole_checkpoint(tmp_path, **extra):
    """A model saved by RecBole's own trainer (as run_recbole.py saves it)."""
    from recbole.utils import get_trainer

    settings = {**quick_settings("BPR"), "model": "BPR", "dataset": "ml-100k", "data_path": builder.bundled_data_path(),
                **extra}
    config = builder.recbole_config(settings, tmp_path / "saved")
    _, train, _, _ = builder.load_data(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, builder.new_model(config, train.dataset))
    trainer._save_checkpoint(0, verbose=False)
    return trainer.saved_model_file


def test_a_model_saved_by_recbole_is_a_teacher_and_another_split_is_refused(tmp_path, quick_run):
    teacher = _recbole_checkpoint(tmp_path)
    result = quick_run("BPR", "rp_kd", epochs=1, target_sparsities=[0.5], kd_teacher=teacher)
    assert [r["ticket"] for r in result.rows] == ["rp_kd_0.5"] and result.rows[0]["kd_weight"] == 1.0
    other = _recbole_checkpoint(tmp_path, seed=7)
    with pytest.raises(ConfigError, match="its seed is 7, this run's is 2020"):
        quick_run("BPR", "rp_kd", epochs=1, target_sparsities=[0.5], kd_teacher=other)
