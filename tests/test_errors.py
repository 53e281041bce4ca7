"""Bad input stops before training with one line naming the key and the allowed values."""
import pytest

from recbole_lth.cli import main


@pytest.mark.parametrize(
    "args, key, allowed",
    [
        (["--method=lottery"], "method", "dense, imp, wr, eb, omp, rp, dsl, pep, snip"),
        (["--model=DIN"], "model", "a RecBole sequential recommender: BERT4Rec"),
        (["--model=NoSuchModel"], "model", "a RecBole context-aware (CTR) recommender: AFM, AutoInt"),
        (["--dataset=nope", "--data_path=."], "dataset", "nothing is downloaded"),
        (["--target_sparsity=1.0"], "target_sparsity", "[0, 1)"),
        (["--target_sparsity=-0.1"], "target_sparsity", "[0, 1)"),
        (["--method=omp", "--target_sparsities=[0.5,1.2]"], "target_sparsities", "[0, 1)"),
        (["--method=rp", "--target_sparsities=[]"], "target_sparsities", "non-empty list"),
        (["--prune_rate=0"], "prune_rate", "(0, 1)"),
        (["--prune_rate=1"], "prune_rate", "(0, 1)"),
        (["--prune_scope=layer"], "prune_scope", "global, per_table"),
        (["--prune_params=[nothing*]"], "prune_params", "at least one parameter"),
        (["--prune_params=biases"], "prune_params", "embeddings, all_weights"),
        (["--rewind_epoch=2", "--epochs=2"], "rewind_epoch", "[0, 2)"),
        (["--rewind_epoch=-1"], "rewind_epoch", "[0, "),
        (["--config_files=missing.yaml"], "config_files", "existing yaml"),
    ],
)
@pytest.mark.filterwarnings("ignore")  # RecBole's own library warnings are not our message
def test_bad_input_is_one_clear_line_and_no_training(tmp_path, capsys, args, key, allowed):
    base = {"--model": "BPR", "--dataset": "ml-100k", "--method": "imp", "--epochs": "2"}
    for arg in args:
        base.pop(arg.split("=")[0], None)
    argv = [f"{k}={v}" for k, v in base.items()] + args + [f"--output_root={tmp_path / 'runs'}", "--state=WARNING"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"recbole_lth: invalid {key}=")
    assert allowed in err[0]
    assert not list(tmp_path.glob("runs/*/tickets")), "training started"


def test_run_dir_with_other_settings_is_refused_and_left_untouched(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["--model=BPR", "--dataset=ml-100k", "--method=rp", "--epochs=1", "--state=WARNING",
              "--embedding_size=8", f"--run_dir={run_dir}"]
    assert main(common + ["--target_sparsities=[0.5]"]) == 0
    before = (run_dir / "results.csv").read_text()
    assert main(common + ["--target_sparsities=[0.9]"]) == 2
    err = capsys.readouterr().err
    assert "invalid run_dir=" in err and "target_sparsities" in err
    assert (run_dir / "results.csv").read_text() == before
