"""Independent tickets at once (``workers``, ``executor: ray``): the same
results as one after another, bit for bit, each ticket trained once, and
nothing lost when a worker or the driver is killed."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import recbole_lth
from recbole_lth.cli import main
from recbole_lth.core import checkpoint, paths
from recbole_lth.engine.results import WALL_TIME_COLUMNS
from tests.conftest import QUICK

# One thread per ticket everywhere, so that sequential and parallel tickets
# run the very same kernels.
STUDY = {**QUICK, "epochs": 1, "embedding_size": 8, "target_sparsities": [0.5, 0.8], "worker_threads": 1,
         "progress": False}
METHODS = ["omp", "rp", "dsl"]


def _rows(run_dir: Path) -> list[dict]:
    with open(paths.RunPaths(run_dir).results, newline="") as f:
        return [{k: v for k, v in row.items() if k not in WALL_TIME_COLUMNS} for row in csv.DictReader(f)]


def assert_same_run(a: Path, b: Path) -> None:
    """Same rows (bar wall time) and the very same weights and masks in every ticket."""
    assert _rows(a) == _rows(b)
    keys = paths.RunPaths(a).stored_tickets()
    assert keys == paths.RunPaths(b).stored_tickets() and keys
    for key in keys:
        x, y = (checkpoint.load(paths.RunPaths(d).ticket_weights(key)) for d in (a, b))
        for part in ("state_dict", "masks"):
            assert x[part].keys() == y[part].keys()
            assert all(torch.equal(x[part][n], y[part][n]) for n in x[part]), (key, part)


def trained_once(run_dir: Path) -> dict[str, int]:
    """RecBole's TensorBoard writer starts one events file per training of a
    ticket: a ticket trained twice would have two."""
    boards = paths.RunPaths(run_dir).tensorboard
    return {d.name: len(list(d.glob("events.out.tfevents*"))) for d in boards.iterdir() if d.name != "tickets"}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sequential") / "run"
    recbole_lth.run(model="BPR", dataset="ml-100k", method=METHODS, config_dict={**STUDY, "run_dir": str(run_dir)})
    return run_dir


def test_two_workers_give_the_sequential_results_bit_for_bit(sequential, tmp_path):
    run_dir = tmp_path / "parallel"
    result = recbole_lth.run(model="BPR", dataset="ml-100k", method=METHODS,
                             config_dict={**STUDY, "workers": 2, "run_dir": str(run_dir)})
    assert_same_run(sequential, run_dir)
    assert [r["ticket"] for r in result.rows] == [r["ticket"] for r in _rows(sequential)]
    assert trained_once(run_dir) == {k: 1 for k in paths.RunPaths(run_dir).stored_tickets()}
    assert (run_dir / "report.md").is_file()


def test_ray_tasks_give_the_sequential_results_bit_for_bit(sequential, tmp_path):
    run_dir = tmp_path / "ray"
    recbole_lth.run(model="BPR", dataset="ml-100k", method=METHODS,
                    config_dict={**STUDY, "workers": 2, "executor": "ray", "run_dir": str(run_dir)})
    assert_same_run(sequential, run_dir)
    assert trained_once(run_dir) == {k: 1 for k in paths.RunPaths(run_dir).stored_tickets()}


def _cli(run_dir: Path, *extra: str) -> list[str]:
    args = [f"--{k}={v}" for k, v in STUDY.items() if k != "target_sparsities"]
    return [sys.executable, "-c", "import sys; from recbole_lth.cli import main; sys.exit(main())", "--model=BPR", "--dataset=ml-100k",
            f"--method=[{','.join(METHODS)}]", "--target_sparsities=[0.5,0.8]", f"--run_dir={run_dir}", *args, *extra]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_for(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_killed_worker_or_driver_loses_nothing_and_a_rerun_ends_the_same(sequential, tmp_path):
    # One worker killed while the study runs: the other worker and the driver finish it.
    run_dir = tmp_path / "one_killed"
    driver = subprocess.Popen(_cli(run_dir, "--workers=2"), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run_dir / "claims").is_dir() and len(_children(driver.pid)) == 2)
    os.kill(_children(driver.pid)[0], signal.SIGKILL)
    assert driver.wait(timeout=300) == 0, driver.stderr.read()[-2000:]
    assert "a worker ended with exit code -9" in driver.stderr.read()
    assert_same_run(sequential, run_dir)

    # The driver and its workers killed once the first ticket is finished: the re-run ends the same.
    run_dir = tmp_path / "all_killed"
    driver = subprocess.Popen(_cli(run_dir, "--workers=2"), cwd=tmp_path, stderr=subprocess.DEVNULL)
    _wait_for(lambda: len(paths.RunPaths(run_dir).stored_tickets()) >= 1)
    workers = _children(driver.pid)
    driver.kill()
    driver.wait()
    finished = [k for k in paths.RunPaths(run_dir).stored_tickets()
                if paths.RunPaths(run_dir).ticket_result(k).is_file()]
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), timeout=30)  # they die with it
    done = subprocess.run(_cli(run_dir, "--workers=2"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(sequential, run_dir)
    # A ticket finished before the kill is never trained again; one the kill interrupted (its events file
    # stays) is trained once more.
    counts = trained_once(run_dir)
    assert finished and all(counts[k] == 1 for k in finished), (finished, counts)
    assert all(n in (1, 2) for n in counts.values()), counts


def test_workers_die_with_a_driver_killed_while_they_start_and_its_job_folder_is_swept(tmp_path):
    """Issue 35, items 8 and 9: a driver SIGKILLed within ~3 s of starting its workers left them training every
    ticket with parent 1 (they set PR_SET_PDEATHSIG only after importing torch), and each kill leaked a
    recbole_lth_workers_* folder."""
    from recbole_lth.engine import parallel

    temp = tmp_path / "tmp"
    temp.mkdir()
    driver = subprocess.Popen(_cli(tmp_path / "run", "--workers=2"), cwd=tmp_path, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TMPDIR": str(temp)})
    _wait_for(lambda: len(_workers(driver.pid)) == 2, timeout=60)
    workers = _workers(driver.pid)
    driver.kill()
    driver.wait()
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers),
              timeout=20)
    leaked = list(temp.glob("recbole_lth_workers_*"))
    assert [f.name.split("_")[3] for f in leaked] == [str(driver.pid)]
    alive = temp / f"recbole_lth_workers_{os.getpid()}_mine"
    alive.mkdir()
    parallel.sweep_job_folders(temp)  # what the next driver does first
    assert list(temp.glob("recbole_lth_workers_*")) == [alive]


def _workers(pid: int) -> list[int]:
    """The driver's worker interpreters (not whatever else it starts, ldconfig for ctypes say)."""
    def is_worker(child: int) -> bool:
        try:
            return b"worker_process_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            return False

    return [child for child in _children(pid) if is_worker(child)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_ctrl_c_with_workers_is_one_line_and_the_same_command_resumes(sequential, tmp_path):
    """Issue 35: Ctrl-C gave KeyboardInterrupt tracebacks, three with two workers."""
    for attempt in range(3):
        run_dir = tmp_path / f"interrupted_{attempt}"
        driver = subprocess.Popen(_cli(run_dir, "--workers=2"), cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        _wait_for(lambda: len(paths.RunPaths(run_dir).stored_tickets()) >= 1)
        workers = _workers(driver.pid)
        os.killpg(driver.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
        code = driver.wait(timeout=60)
        # On a loaded machine the 1-epoch study can end before the interrupt lands (exit 0, nothing was
        # interrupted): try again; a driver that ignored Ctrl-C would end with 0 every time.
        if code != 0:
            break
    assert code == 130
    err = driver.stderr.read()
    assert "Traceback" not in err and err.count("recbole_lth: interrupted") == 1, err[-2000:]
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers),
              timeout=20)
    done = subprocess.run(_cli(run_dir, "--workers=2"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(sequential, run_dir)


def test_workers_run_the_package_of_their_driver(tmp_path):
    """Issue 35, item 10: workers imported the installed recbole_lth, mixing two versions' code when a checkout
    ran beside another install."""
    from recbole_lth.engine import parallel

    entry = parallel.worker_entry(tmp_path / "worker_0.pkl")
    package_root = str(Path(recbole_lth.__file__).resolve().parents[1])
    assert f"sys.path.insert(0, {package_root!r})" in entry
    assert entry.index("prctl") < entry.index("import worker_process_main")  # dies with the driver before imports
    # A worker whose driver is already gone (its parent is not the driver) ends at once, before it imports torch
    # or reads its job file (here: none, which would exit 1).
    orphan = entry.replace(f"if os.getppid() != {os.getpid()}:", "if os.getppid() != -1:")
    assert orphan != entry
    done = subprocess.run([sys.executable, "-c", orphan], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-500:]


def test_a_ticket_that_fails_on_a_worker_stops_the_run_with_its_line(tmp_path, capsys):
    run_dir = tmp_path / "diverged"
    code = main([f"--run_dir={run_dir}", "--model=BPR", "--dataset=ml-100k", "--method=pep",
                 "--target_sparsities=[0.5,0.8]", "--workers=2", "--learning_rate=1e30", "--epochs=2",
                 "--embedding_size=8", "--state=WARNING", "--progress=False", "--train_batch_size=4096"])
    err = capsys.readouterr().err
    assert code == 1, err
    line = [x for x in err.splitlines() if x.startswith("recbole_lth: ")]
    assert len(line) == 1 and "threshold search" in line[0] and "NaN" in line[0], err[-2000:]
    assert not (run_dir / "results.csv").exists()  # the driver stopped before its pass: no half table
