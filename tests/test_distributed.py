"""Several processes, one search (--nproc): gloo on the CPU, masks identical on every rank."""
import os

import pytest
import torch
import torch.distributed as dist

import recbole_lth
from recbole_lth import cli
from recbole_lth.core import checkpoint, paths
from recbole_lth.core.errors import RankFailed
from recbole_lth.engine import distributed, results

from conftest import quick_settings


def _flip_on_rank_one(numel: int) -> None:
    """A rank's masks, one entry flipped on rank 1, checked across ranks."""
    keys = distributed.recbole_keys()
    dist.init_process_group("gloo", rank=keys["local_rank"], world_size=keys["world_size"],
                            init_method=f"tcp://{keys['ip']}:{keys['port']}")
    mask = torch.ones(numel, dtype=torch.bool)
    if distributed.rank() == 1:
        mask[numel // 2] = False
    distributed.check_identical({"item_embedding.weight": mask}, "a test mask")


def test_a_mask_that_differs_on_one_rank_stops_the_run():
    with pytest.raises(RankFailed, match="differ between ranks") as failure:
        distributed.launch(2, _flip_on_rank_one, (1000,))
    assert failure.value.exit_code == 1


def test_mask_digest_sees_any_flipped_entry_and_its_position():
    mask = torch.rand(50, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    digest = distributed.mask_digest({"t": mask})
    for index in (0, 17, 799):
        flipped = mask.clone().view(-1)
        flipped[index] = ~flipped[index]
        assert distributed.mask_digest({"t": flipped.view(50, 16)}) != digest
    moved = mask.clone().view(-1)
    first_on, first_off = int(moved.nonzero()[0]), int((~moved).nonzero()[0])
    moved[first_on], moved[first_off] = False, True  # same count, another position
    assert distributed.mask_digest({"t": moved.view(50, 16)}) != digest


def test_two_processes_run_imp_dsl_and_pep_with_identical_masks_and_one_results_csv(tmp_path):
    root = tmp_path / "runs"
    settings = quick_settings("BPR", output_root=str(root), nproc=2, epochs=2, rounds=1, target_sparsities=[0.5],
                              pep_schedule_epochs=0.5, dsl_update_epochs=0.25, dsl_end_epoch=None)
    result = recbole_lth.run(model="BPR", dataset="ml-100k", method=["imp", "dsl", "pep"], config_dict=settings)
    assert [p.name for p in root.iterdir()] == [result.run_dir.name]  # rank 1 wrote nothing there
    rows = results.read_results(result.run_dir)
    tickets = {r["ticket"] for r in rows}
    assert {"dense", "imp_round_01", "dsl_0.5", "pep_0.5"} <= tickets
    trained = [r for r in rows if r.get("test_recall@10") is not None]
    # every ticket was checked (all-gathered mask digests) on both ranks
    assert trained and all(r["ranks"] == 2 for r in trained)
    for row in trained:
        masks = checkpoint.load(paths.RunPaths(result.run_dir).ticket_weights(row["ticket"]))["masks"]
        assert 0 < sum(int(m.sum()) for m in masks.values())
    assert paths.RunPaths(result.run_dir).report.is_file()
    # a second launch resumes: nothing is trained again
    again = recbole_lth.run(model="BPR", dataset="ml-100k", method=["imp", "dsl", "pep"], config_dict=settings)
    assert [r["ticket"] for r in again.rows] == [r["ticket"] for r in rows]
    assert os.listdir(root) == [result.run_dir.name]


def test_bad_nproc_is_one_line_and_exit_2(capsys):
    assert cli.main(["--model=BPR", "--dataset=ml-100k", "--method=imp", "--nproc=0"]) == 2
    assert "nproc" in capsys.readouterr().err

