"""Progress a person can follow: one line per ticket, a ticket-level bar,
TensorBoard inside the run directory, and none of RecBole's known warnings."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from recbole_lth.cli import main

FAST = ["--model=BPR", "--dataset=ml-100k", "--state=WARNING", "--embedding_size=8", "--epochs=1",
        "--eval_batch_size=40960", "--train_batch_size=4096"]
LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S+) \((\w+)\): sparsity (\d\.\d{4}), valid \S+ (\d\.\d{4}), "
                  r"test (\d\.\d{4}), best epoch (\d+) \((.*)\)$")


def _lines(text):
    return [m.groups() for m in map(LINE.match, text.splitlines()) if m]


def test_one_line_per_ticket_a_bar_and_tensorboard_in_the_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = FAST + ["--method=[omp,rp]", "--target_sparsities=[0.5]", f"--run_dir={run_dir}"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    lines = _lines(out)
    assert [(i, n, ticket, method) for i, n, ticket, method, *_ in lines] == [
        ("1", "3", "dense", "dense"), ("2", "3", "omp_0.5", "omp"), ("3", "3", "rp_0.5", "rp")]
    assert [float(line[4]) for line in lines] == [0, 0.5, 0.5]
    assert all(re.fullmatch(r"1 epochs, \d+ s", line[-1]) for line in lines)
    assert "tickets: 100%" in err and "3/3" in err  # tqdm's bar, on stderr
    # RecBole's per-epoch writers and the run's per-ticket scalars, all in the run directory.
    boards = run_dir / "tensorboard"
    assert {p.name for p in boards.iterdir()} == {"dense", "omp_0.5", "rp_0.5", "tickets"}
    assert all(any(p.name.startswith("events.out.tfevents") for p in d.iterdir()) for d in boards.iterdir())
    assert not (tmp_path / "log_tensorboard").exists() and not Path("log_tensorboard").exists()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(boards / "tickets")).Reload()
    assert [round(e.value, 4) for e in scalars.Scalars("ticket/sparsity")] == [0, 0.5, 0.5]
    valid = [e.value for e in scalars.Scalars("ticket/valid_recall@20")]
    assert [f"{v:.4f}" for v in valid] == [line[5] for line in lines]

    # Resumed: the finished tickets are listed as such, nothing retrains.
    assert main(args) == 0
    assert [line[-1] for line in _lines(capsys.readouterr().out)] == ["already finished"] * 3


def test_progress_false_prints_no_bar_and_no_lines(tmp_path, capsys):
    assert main(FAST + ["--method=omp", "--target_sparsities=[0.5]", "--progress=False",
                        f"--run_dir={tmp_path / 'run'}"]) == 0
    out, err = capsys.readouterr()
    assert not _lines(out) and "tickets:" not in err


def test_recbole_known_warnings_are_silenced(tmp_path):
    # A fresh interpreter: pytest's own warning filters would hide what a user sees.
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    command = [sys.executable, "-c", "import sys; from recbole_lth.cli import main; sys.exit(main())", "--model=LightGCN", *FAST[1:], "--method=omp",
               "--target_sparsities=[0.5]", "--progress=False", f"--run_dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for known in ("not writable", "GradScaler", "SparseTensor", "pkg_resources", "inplace keyword", "__array_wrap__"):
        assert known not in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "log_tensorboard").exists()
