"""Nothing silently wrong: every input checked, every ticket meaningful, one process per run directory.

One test (or parametrised case) per fault of the issue that asked for this, each
reproducing it through the command line as a user would."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from recbole_lth.cli import main
from recbole_lth.core import checkpoint, paths
from recbole_lth.views import judge

FAST = ["--model=BPR", "--dataset=ml-100k", "--state=WARNING", "--embedding_size=8", "--epochs=1",
        "--eval_batch_size=40960", "--train_batch_size=4096"]


def _cli(capsys, *args):
    """Exit status and the stderr lines of one command."""
    status = main(list(FAST) + list(args))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recbole_lth:")]
    return status, err


def _rows(run_dir):
    return list(csv.DictReader(open(paths.RunPaths(run_dir).results)))


# 1 --------------------------------------------------------------- targets
def test_near_equal_targets_are_two_tickets_and_duplicates_are_refused(tmp_path, capsys):
    run_dir = tmp_path / "near"
    status, _ = _cli(capsys, "--method=rp", "--target_sparsities=[0.5,0.50004]", f"--run_dir={run_dir}")
    assert status == 0
    rows = _rows(run_dir)
    assert [(r["ticket"], r["target_sparsity"]) for r in rows] == [("rp_0.5", "0.5"), ("rp_0.50004", "0.50004")]
    status, err = _cli(capsys, "--method=rp", "--target_sparsities=[0.5,0.5]", f"--run_dir={tmp_path / 'dup'}")
    assert status == 2 and err[0].startswith("recbole_lth: invalid target_sparsities=") and "distinct" in err[0]
    assert not (tmp_path / "dup").exists()


# 2 -------------------------------------------------------- misspelled keys
@pytest.mark.parametrize("arg, closest", [("--prune_rat=0.3", "prune_rate"), ("--metod=omp", "method"),
                                          ("--epoch=1", "epochs"), ("--lerning_rate=0.01", "learning_rate")])
def test_misspelled_keys_are_refused_naming_the_closest_known_key(tmp_path, capsys, arg, closest):
    status, err = _cli(capsys, arg, f"--run_dir={tmp_path / 'run'}")
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"recbole_lth: unknown key {arg[2:].split('=')[0]}=") and f"did you mean {closest}?" in err[0]
    assert not (tmp_path / "run").exists()


def test_recbole_keys_of_the_model_are_known(tmp_path, capsys):
    # NeuMF's own keys (not in RecBole's overall.yaml) and RecBole's general ones are accepted.
    args = ["--model=NeuMF", "--dataset=ml-100k", "--state=WARNING", "--epochs=1", "--method=dense", "--seed=3",
            "--mlp_hidden_size=[8]", "--mf_embedding_size=4", "--mlp_embedding_size=4", f"--run_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    # ... but NeuMF has no embedding_size: RecBole would ignore it silently.
    assert main(args + ["--embedding_size=8"]) == 2
    assert "unknown key embedding_size=8: did you mean mf_embedding_size?" in capsys.readouterr().err


# 3 ------------------------------------------------------------ empty tickets
@pytest.mark.parametrize("args, key", [
    (["--method=imp", "--prune_rate=0.9", "--rounds=7"], "prune_rate"),
    (["--method=omp", "--target_sparsities=[0.5,0.9999999]"], "target_sparsities"),
    (["--method=rp", "--target_sparsities=[0.99995]", "--prune_scope=per_table"], "target_sparsities"),
])
def test_tickets_with_no_weight_are_refused_before_training(tmp_path, capsys, args, key):
    status, err = _cli(capsys, *args, f"--run_dir={tmp_path / 'run'}")
    assert status == 2 and len(err) == 1 and err[0].startswith(f"recbole_lth: invalid {key}=")
    assert "keeps none of" in err[0]
    assert not (tmp_path / "run").exists()


def test_an_empty_ticket_is_never_judged_winning():
    dense = {"ticket": "dense", "sparsity": 0.0, "test_recall@20": 0.1, "nonzero_params": 10, "prunable_params": 10}
    empty = {"ticket": "omp_0.99", "sparsity": 0.99, "test_recall@20": 0.5, "nonzero_params": 0,
             "prunable_params": 10}
    assert judge.is_winning(empty, dense, "test_recall@20") is None
    assert judge.verdict_cell(empty, dense, "test_recall@20").startswith("empty")


def test_baselines_say_when_a_target_clamps(tmp_path, capsys):
    status, _ = _cli(capsys, "--method=small_dense", "--target_sparsities=[0.5,0.999]", f"--run_dir={tmp_path / 'r'}")
    assert status == 0
    half, clamped = _rows(tmp_path / "r")
    assert "clamps" not in half["note"]
    assert "target 0.999 clamps to sparsity 0.875" in clamped["note"]  # width 1 of 8


# 4 ----------------------------------------------------------------- NaN
def test_a_nan_in_the_pep_search_is_one_line_and_exit_1(tmp_path, capsys):
    status, err = _cli(capsys, "--method=pep", "--learning_rate=1e30", "--target_sparsities=[0.5]",
                       f"--run_dir={tmp_path / 'run'}")
    assert status == 1 and len(err) == 1
    assert "threshold search" in err[0] and "NaN" in err[0] and "learning_rate" in err[0]


def test_the_nan_hint_names_kd_weight_when_distilling(tmp_path, capsys, monkeypatch):
    from recbole_lth.sparse import distill

    monkeypatch.setattr(distill.Distiller, "kd_loss", lambda self, model, inter: torch.tensor(float("nan")))
    status, err = _cli(capsys, "--method=rp_kd", "--target_sparsities=[0.5]", f"--run_dir={tmp_path / 'run'}")
    assert status == 1 and "NaN" in err[0] and "kd_weight (now 1.0)" in err[0]
    assert [r["ticket"] for r in _rows(tmp_path / "run")] == ["dense"]  # the teacher is kept


# 5 ------------------------------------------------------ scientific notation
def test_numbers_in_scientific_notation_are_numbers(tmp_path, capsys):
    status, _ = _cli(capsys, "--method=imp_kd", "--prune_rate=2e-1", "--rounds=1", "--kd_weight=1e-3",
                     f"--run_dir={tmp_path / 'run'}")
    assert status == 0
    stored = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert stored["prune_rate"] == 0.2 and stored["kd_weight"] == 0.001
    assert float(_rows(tmp_path / "run")[1]["sparsity"]) == pytest.approx(0.2, abs=1e-4)


# 6 ------------------------------------------------ a refused run locks nothing
def test_a_refused_run_leaves_its_run_dir_usable(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, err = _cli(capsys, "--method=omp", "--prune_params=[nothing*]", f"--run_dir={run_dir}")
    assert status == 2 and "prune_params" in err[0]
    assert not (run_dir / "settings.json").exists()
    # A teacher of another model class (same shapes) is refused before anything is written, too.
    lightgcn = tmp_path / "lightgcn"
    assert _cli(capsys, "--model=LightGCN", "--method=dense", f"--run_dir={lightgcn}")[0] == 0
    teacher = lightgcn / "tickets" / "dense" / "ticket.pt"
    status, err = _cli(capsys, "--method=rp_kd", "--target_sparsities=[0.5]", f"--kd_teacher={teacher}",
                       f"--run_dir={run_dir}")
    assert status == 2 and "kd_teacher" in err[0] and "LightGCN" in err[0]
    assert not (run_dir / "settings.json").exists()
    status, _ = _cli(capsys, "--method=omp", "--target_sparsities=[0.5]", f"--run_dir={run_dir}")
    assert status == 0 and [r["ticket"] for r in _rows(run_dir)] == ["dense", "omp_0.5"]


# 7 ---------------------------------------------------- one process per run
def test_a_second_process_on_a_run_dir_is_refused_and_a_killed_one_blocks_nothing(tmp_path, capsys):
    from filelock import FileLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    held = FileLock(run_dir / "run.lock", timeout=0)
    held.acquire()  # another process (a second lock object behaves as one)
    try:
        status, err = _cli(capsys, "--method=dense", f"--run_dir={run_dir}")
        assert status == 2 and "another recbole_lth process" in err[0]
        assert not (run_dir / "settings.json").exists()
    finally:
        held.release()
    # A process killed while holding the lock: the OS releases it.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; FileLock(sys.argv[1], timeout=0).acquire(); "
        "print('locked', flush=True); time.sleep(60)"), str(run_dir / "run.lock")], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    status, _ = _cli(capsys, "--method=dense", f"--run_dir={run_dir}")
    assert status == 0 and (run_dir / "run.lock").exists()


# 8 -------------------------------------------------------- changed data
def test_resuming_on_other_data_is_refused(tmp_path, capsys, tiny_data):
    data_path, dataset = tiny_data
    args = ["--model=BPR", f"--dataset={dataset}", f"--data_path={data_path}", "--method=dense", "--epochs=1",
            "--state=WARNING", "--embedding_size=8", f"--run_dir={tmp_path / 'run'}"]
    assert main(args) == 0
    inter = os.path.join(data_path, dataset, f"{dataset}.inter")
    lines = open(inter).read().splitlines()
    open(inter, "w").write("\n".join(lines[:-40]) + "\n")  # the same files, other contents
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recbole_lth:")]
    assert err[0].startswith("recbole_lth: invalid data_path=") and "train" in err[0]


# 9 ------------------------------------------------------------ tracebacks
@pytest.mark.parametrize("args, key", [
    (["--embedding_size=0"], "embedding_size"),
    (["--learning_rate=-1"], "learning_rate"),
    (["--topk=[0]"], "topk"),
    (["--valid_metric=Foo@20"], "valid_metric"),
    (["--valid_metric=Recall@50"], "valid_metric"),
    (["--train_batch_size=0"], "train_batch_size"),
    (["--eval_step=0"], "eval_step"),
])
def test_impossible_recbole_values_are_one_line(tmp_path, capsys, args, key):
    status, err = _cli(capsys, "--method=dense", *args, f"--run_dir={tmp_path / 'run'}")
    assert status == 2 and len(err) == 1 and err[0].startswith(f"recbole_lth: invalid {key}=")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, problem", [
    ("user_id\titem_id\n1\t2\n", "without a type"),
    ("user_id:token\trating:float\n1\t2\n", "no item_id column"),
    ("", "it is empty"),
    ("user_id:token\titem_id:token\n", "no interaction rows"),
])
def test_malformed_atomic_files_are_one_line(tmp_path, capsys, content, problem):
    folder = tmp_path / "data" / "bad"
    folder.mkdir(parents=True)
    (folder / "bad.inter").write_text(content)
    status = main(["--model=BPR", "--dataset=bad", f"--data_path={tmp_path / 'data'}", "--method=dense",
                   f"--run_dir={tmp_path / 'run'}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recbole_lth:")]
    assert status == 2 and len(err) == 1 and err[0].startswith("recbole_lth: invalid dataset='bad'")
    assert problem in err[0] and "bad.inter" in err[0]


def test_report_of_a_file_and_of_an_unknown_ticket(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _cli(capsys, "--method=dense", f"--run_dir={run_dir}")[0] == 0
    before = (run_dir / "report.md").read_text()
    assert main(["report", str(run_dir / "results.csv")]) == 2
    assert main(["report", str(run_dir), "--ticket", "omp_0.5"]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and "no ticket 'omp_0.5'" in err
    assert (run_dir / "report.md").read_text() == before


@pytest.mark.parametrize("damage", ["ticket.pt", "result.json", "settings.json", "init_state.pt"])
def test_damaged_files_name_the_file_and_the_fix(tmp_path, capsys, damage):
    run_dir = tmp_path / "run"
    args = ["--method=omp", "--target_sparsities=[0.5]", f"--run_dir={run_dir}"]
    assert _cli(capsys, *args)[0] == 0
    target = {"ticket.pt": run_dir / "tickets" / "dense" / "ticket.pt",
              "result.json": run_dir / "tickets" / "dense" / "result.json",
              "settings.json": run_dir / "settings.json", "init_state.pt": run_dir / "init_state.pt"}[damage]
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])  # truncated
    status, err = _cli(capsys, *args)
    expected = {  # exit status, the file named, the fix
        "ticket.pt": (1, str(run_dir / "tickets" / "dense"), "delete that folder and re-run"),
        "result.json": (1, str(run_dir / "tickets" / "dense"), "delete that folder and re-run"),
        "settings.json": (2, f"{run_dir}': allowed values are a folder whose settings.json can be read", "restore it"),
        "init_state.pt": (1, str(run_dir / "init_state.pt"), "in a new run_dir"),
    }[damage]
    assert len(err) == 1 and status == expected[0], err
    assert expected[1] in err[0] and expected[2] in err[0], err[0]
    assert (run_dir / "tickets" / "omp_0.5" / "result.json").exists()  # nothing finished is lost


@pytest.mark.parametrize("lost", ["settings.json", "data.json"])
def test_a_run_directory_that_lost_its_settings_or_data_file_never_reuses_its_tickets(tmp_path, capsys, lost):
    """Issue 35, items 1 and 2: without settings.json (data.json) the finished tickets cannot be matched to the
    new command's settings (data); they were reused, and results.csv held another run's metrics."""
    run_dir = tmp_path / "run"
    args = ["--method=omp", "--target_sparsities=[0.5]", f"--run_dir={run_dir}"]
    assert _cli(capsys, *args)[0] == 0
    before = (run_dir / "results.csv").read_text()
    (run_dir / lost).unlink()
    other = ["--learning_rate=0.01"] if lost == "settings.json" else []  # data.json: the same command on other data
    status, err = _cli(capsys, *args, *other)
    assert status == 2 and len(err) == 1 and f"its {lost} restored" in err[0], err
    assert (run_dir / "results.csv").read_text() == before and not (run_dir / lost).exists()


def test_workers_beyond_the_machine_are_refused_and_beyond_the_tickets_capped(tmp_path, capsys, trained_keys):
    """Issue 35, item 7: --workers=1000000 started an interpreter per worker until memory ran out."""
    import os

    status, err = _cli(capsys, "--method=dense", "--workers=1000000", f"--run_dir={tmp_path / 'huge'}")
    assert status == 2 and len(err) == 1 and "invalid workers=1000000" in err[0], err
    assert f"up to {4 * (os.cpu_count() or 1)}" in err[0] and not (tmp_path / "huge").exists()
    # One ticket and two workers: it trains here, once, with a line saying why.
    status, _ = _cli(capsys, "--method=dense", "--workers=2", f"--run_dir={tmp_path / 'one'}")
    assert status == 0 and trained_keys == ["dense"]
    assert "workers=2 for 1 ticket(s): 1 worker(s) start" in (tmp_path / "one" / "run.log").read_text()


# 10 ---------------------------------------------------------------- smaller
def test_use_gpu_without_a_gpu_says_so(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert _cli(capsys, "--method=dense", "--use_gpu=True", f"--run_dir={tmp_path / 'run'}")[0] == 0
    assert "no CUDA device" in (tmp_path / "run" / "run.log").read_text()


# Issue 35, items 3-5 ----------------------------------------------- damaged run directories
@pytest.mark.parametrize("damage", ["missing", "empty", "cut mid-field"])
def test_a_damaged_results_csv_is_refused_by_report_and_compare_and_rebuilt_by_a_rerun(
        tmp_path, capsys, damage, trained_keys):
    """Item 3: an empty results.csv was reported as "0 tickets" over report.md, and a row cut mid-field read a
    metric as 0; compare silently took 0 rows."""
    run_dir = tmp_path / "run"
    args = ["--method=omp", "--target_sparsities=[0.5]", f"--run_dir={run_dir}"]
    assert _cli(capsys, *args)[0] == 0
    results, report = run_dir / "results.csv", run_dir / "report.md"
    before, report_before = results.read_text(), report.read_text()
    {"missing": lambda: results.unlink(), "empty": lambda: results.write_text(""),
     "cut mid-field": lambda: results.write_text(before[:-4])}[damage]()
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == (2 if damage == "missing" else 1)
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "cmp")]) == (2 if damage == "missing" else 1)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recbole_lth:")]
    assert len(err) == 2 and all(str(results) in line or "no results.csv" in line for line in err), err
    if damage != "missing":
        assert "re-run the command" in err[0] and ("empty" in err[0] or "cut short" in err[0]), err[0]
    assert report.read_text() == report_before and not (tmp_path / "cmp").exists()
    trained_keys.clear()
    assert _cli(capsys, *args)[0] == 0 and trained_keys == []  # rebuilt from the tickets, nothing retrained
    assert results.read_text() == before


def test_a_rerun_stopped_by_a_damaged_ticket_keeps_every_row_of_results_csv(tmp_path, capsys):
    """Item 4: the re-run stopped at the damaged ticket had rewritten results.csv with the rows before it."""
    run_dir = tmp_path / "run"
    args = ["--method=omp", "--target_sparsities=[0.5,0.8]", f"--run_dir={run_dir}"]
    assert _cli(capsys, *args)[0] == 0
    before = (run_dir / "results.csv").read_text()
    assert len(_rows(run_dir)) == 3
    weights = run_dir / "tickets" / "omp_0.5" / "ticket.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    status, err = _cli(capsys, *args)
    assert status == 1 and len(err) == 1 and "omp_0.5" in err[0], err
    assert (run_dir / "results.csv").read_text() == before


def test_a_seed_study_and_a_single_run_never_share_a_folder(tmp_path, capsys):
    """Item 5: a seed study was accepted into an ordinary run directory (and the reverse), overwriting its
    curve.png."""
    single, study = tmp_path / "single", tmp_path / "study"
    assert _cli(capsys, "--method=dense", f"--run_dir={single}")[0] == 0
    assert _cli(capsys, "--method=dense", "--seeds=[2020]", f"--run_dir={study}")[0] == 0
    listings = {d: sorted(p.relative_to(d) for p in d.rglob("*")) for d in (single, study)}
    status, err = _cli(capsys, "--method=dense", "--seeds=[2020,2021]", f"--run_dir={single}")
    assert status == 2 and len(err) == 1 and "a new folder for a study over seeds" in err[0], err
    status, err = _cli(capsys, "--method=dense", f"--run_dir={study}")
    assert status == 2 and len(err) == 1 and "this one is a study over seeds" in err[0], err
    assert {d: sorted(p.relative_to(d) for p in d.rglob("*")) for d in (single, study)} == listings
    assert _cli(capsys, "--method=dense", f"--run_dir={study / 'seed_2020'}", "--seed=2020")[0] == 0  # one seed's run


@pytest.mark.parametrize("name", ["settings.json", "tables.json"])
def test_a_truncated_json_file_is_named_by_report_and_compare(tmp_path, capsys, name):
    """Tracebacks item: a truncated json file said 'Expecting value: line 4 column 4' and named no file."""
    run_dir = tmp_path / "run"
    assert _cli(capsys, "--method=omp", "--target_sparsities=[0.5]", f"--run_dir={run_dir}")[0] == 0
    damaged = run_dir / name
    if not damaged.exists():
        pytest.skip(f"this run wrote no {name}")
    damaged.write_text(damaged.read_text()[:20])
    capsys.readouterr()
    status = main(["report", str(run_dir)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recbole_lth:")]
    assert status in (1, 2) and len(err) == 1 and str(damaged) in err[0], err


def test_compare_into_an_existing_file_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _cli(capsys, "--method=dense", f"--run_dir={run_dir}")[0] == 0
    (tmp_path / "taken").write_text("mine")
    capsys.readouterr()
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out=" in err[0] and (tmp_path / "taken").read_text() == "mine", err


def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """A read-only run directory gave PermissionError tracebacks in report, export and compare (root ignores
    file modes, so the OS's refusal is raised where the report writes)."""
    from recbole_lth import commands

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "run" / "report.md"))

    monkeypatch.setattr(commands, "write_report", refused)
    assert commands.main(["report", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"recbole_lth: {tmp_path / 'run' / 'report.md'}: Permission denied"]


def test_a_search_that_cannot_write_its_run_directory_is_one_line(tmp_path, capsys, monkeypatch):
    """The same for a search (and tune): the OS's refusal was a PermissionError traceback."""
    from recbole_lth import cli

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "run" / "settings.json"))

    monkeypatch.setattr(cli, "run_request", refused)
    assert main(["--model=BPR", "--dataset=ml-100k", "--method=dense"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"recbole_lth: {tmp_path / 'run' / 'settings.json'}: Permission denied"]


@pytest.mark.parametrize("learner", ["adam_w", "lazy_adam"])
def test_a_learner_recbole_cannot_train_with_is_refused_before_anything_is_written(tmp_path, capsys, learner):
    """An unknown name was trained as Adam with one warning (RecBole's)."""
    status, err = _cli(capsys, "--method=omp", f"--learner={learner}", f"--run_dir={tmp_path / 'run'}")
    assert status == 2 and len(err) == 1 and f"invalid learner='{learner}'" in err[0] and "sparse_adam" in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arg, key", [("--seed=abc", "seed"), ("--seed=1.5", "seed"), ("--seed=-1", "seed"),
                                      ("--seeds=[-1,2]", "seeds"), (f"--seeds=[1,{2 ** 32}]", "seeds")])
def test_a_seed_numpy_cannot_take_is_one_line_naming_it(tmp_path, capsys, arg, key):
    """--seed=abc gave numpy's TypeError (exit 1), and --seeds=[-1,2] was blamed on dataset=."""
    status, err = _cli(capsys, "--method=dense", arg, f"--run_dir={tmp_path / 'run'}")
    assert status == 2 and len(err) == 1 and f"invalid {key}=" in err[0] and "2**32" in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_key_of_a_method_not_in_the_run_is_refused(tmp_path, capsys):
    """--method=omp --dsl_min_ratio=5 exited 0 and changed the run's folder."""
    status, err = _cli(capsys, "--method=omp", "--dsl_min_ratio=5", f"--run_dir={tmp_path / 'run'}")
    assert status == 2 and len(err) == 1, err
    assert "invalid dsl_min_ratio=5" in err[0] and "read by dsl only" in err[0], err[0]
    assert not (tmp_path / "run").exists()


def test_a_recbole_default_given_explicitly_names_the_same_run(tmp_path, capsys, trained_keys):
    """--seed=2020 or --learning_rate=0.001 (RecBole's defaults) made a new folder and retrained every ticket."""
    root = tmp_path / "runs"
    assert _cli(capsys, "--method=dense", f"--output_root={root}")[0] == 0
    assert _cli(capsys, "--method=dense", f"--output_root={root}", "--seed=2020", "--learning_rate=0.001")[0] == 0
    assert len(list(root.iterdir())) == 1 and trained_keys == ["dense"]
    assert _cli(capsys, "--method=dense", f"--output_root={root}", "--seed=7")[0] == 0  # another value: another run
    assert len(list(root.iterdir())) == 2
