"""Data too small to judge, and faults that must be one line (issue 25): each through the command line."""
from __future__ import annotations

import pytest

from recbole_lth.cli import main


def _dataset(tmp_path, name, pairs):
    folder = tmp_path / "data" / name
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i in pairs]
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "data")


def _refused(tmp_path, capsys, data_path, dataset, *args):
    status = main(["--model=BPR", f"--dataset={dataset}", f"--data_path={data_path}", "--method=rp",
                   "--target_sparsities=[0.5]", "--epochs=1", "--embedding_size=8", "--state=WARNING",
                   f"--run_dir={tmp_path / 'run'}", *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recbole_lth:")]
    assert status == 2 and len(err) == 1, err
    assert not (tmp_path / "run" / "settings.json").exists() and not (tmp_path / "run" / "tickets").exists()
    return err[0]


@pytest.mark.filterwarnings("ignore")
def test_splits_without_validation_or_test_users_are_refused(tmp_path, capsys):
    data_path = _dataset(tmp_path, "single", [(u, u % 20 + 1) for u in range(1, 41)])  # one interaction each
    err = _refused(tmp_path, capsys, data_path, "single")
    assert err.startswith("recbole_lth: invalid dataset=") and "single.inter" in err
    assert "validation split has users: it has none" in err


@pytest.mark.filterwarnings("ignore")
def test_a_topk_not_below_the_number_of_items_is_refused(tmp_path, capsys):
    pairs = [(u, i) for u in range(1, 41) for i in range(1 + u % 2, 21, 2)]  # 20 items, 10 per user
    data_path = _dataset(tmp_path, "twenty", pairs)
    err = _refused(tmp_path, capsys, data_path, "twenty", "--topk=[5,20]", "--valid_metric=Recall@5")
    assert err.startswith("recbole_lth: invalid topk=[5, 20]") and "number of items (20)" in err


@pytest.mark.filterwarnings("ignore")
def test_recbole_data_errors_are_one_line_naming_the_file(tmp_path, capsys):
    data_path = _dataset(tmp_path, "oneuser", [(1, i) for i in range(1, 31)])
    err = _refused(tmp_path, capsys, data_path, "oneuser")
    assert err.startswith("recbole_lth: invalid dataset=") and "oneuser.inter" in err
