"""EB: early-bird tickets on IMP's grid, each search round cut when its mask settles."""
import json

import pytest
import torch

from recbole_lth.core import checkpoint, pruning
from recbole_lth.core.errors import ConfigError
from recbole_lth.methods import eb


def test_the_grid_is_imps_rounds_up_to_the_largest_target():
    assert eb.grid(0.2, [0.36]) == [pytest.approx(0.2), pytest.approx(0.36)]
    assert eb.grid(0.2, [0.5]) == [pytest.approx(pruning.imp_sparsity(0.2, r)) for r in (1, 2, 3, 4)]
    assert eb.grid(0.5, [0.1]) == [0.5]


def test_mask_change_is_the_share_of_the_pruned_weights_that_moved():
    survivors = {"w": torch.ones(10, dtype=torch.bool)}
    a = {"w": torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool)}  # prunes 0, 1
    b = {"w": torch.tensor([0, 1, 0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool)}  # prunes 0, 2
    assert float(eb.mask_change(a, a, survivors)) == 0
    assert float(eb.mask_change(a, b, survivors)) == pytest.approx(0.5)
    c = {"w": torch.tensor([1, 1, 0, 0, 1, 1, 1, 1, 1, 1], dtype=torch.bool)}  # prunes 2, 3
    assert float(eb.mask_change(a, c, survivors)) == pytest.approx(1.0)


def test_eb_stops_rounds_when_the_mask_settles_and_trains_each_target_once(quick_run, trained_keys, monkeypatch):
    result = quick_run("BPR", "eb", epochs=5, target_sparsities=[0.36, 0.5], eb_epsilon=1.0, eb_window=1,
                       eb_max_epochs=4, learning_rate=0.01)
    rows = {r["ticket"]: r for r in result.rows}
    assert list(rows) == ["eb_0.36", "eb_0.5"] and trained_keys == ["eb_0.36", "eb_0.5"]
    for target, row in zip((0.36, 0.5), rows.values()):
        assert row["sparsity"] == pytest.approx(target, abs=1e-4) and row["method"] == "eb"
    meta = json.loads((result.run_dir / "search" / "eb.json").read_text())
    # Any change is below 1.0: every round stops after its second epoch, the first change it can measure.
    assert [r["epochs"] for r in meta["rounds"]] == [2, 2, 2, 2]
    assert [r["prunes_to"] for r in meta["rounds"]] == [0.2, 0.36, 0.488, 0.5904]
    assert [t["search_rounds"] for t in meta["targets"]] == [2, 4]
    assert rows["eb_0.5"]["search_epochs"] == 8 and rows["eb_0.5"]["search_rounds"] == 4
    # Pruned weights are never revived: the 0.5 mask lies inside the 0.36 one.
    masks = {k: checkpoint.load(result.run_dir / "tickets" / k / "ticket.pt")["masks"] for k in rows}
    for name, kept in masks["eb_0.5"].items():
        assert not bool((kept & ~masks["eb_0.36"][name]).any())

    # A re-run loads the search and the tickets: nothing trains again.
    def no_search(self):
        raise AssertionError("searched again")

    monkeypatch.setattr(eb.EarlyBirdSearch, "fit", no_search)
    trained_keys.clear()
    again = quick_run("BPR", "eb", epochs=5, target_sparsities=[0.36, 0.5], eb_epsilon=1.0, eb_window=1,
                      eb_max_epochs=4, learning_rate=0.01)
    assert trained_keys == [] and [r["test_recall@20"] for r in again.rows] == [
        r["test_recall@20"] for r in rows.values()]


def test_a_round_that_never_settles_stops_at_eb_max_epochs(quick_run):
    result = quick_run("BPR", "eb", epochs=5, target_sparsities=[0.2], eb_epsilon=1e-9, eb_window=2,
                       eb_max_epochs=3)
    meta = json.loads((result.run_dir / "search" / "eb.json").read_text())
    assert [r["epochs"] for r in meta["rounds"]] == [3] and len(meta["rounds"][0]["mask_change"]) == 2


@pytest.mark.parametrize("key, value", [("eb_epsilon", 0), ("eb_window", 0), ("eb_max_epochs", 1.5)])
def test_eb_keys_are_checked(key, value):
    from recbole_lth import api

    with pytest.raises(ConfigError) as err:
        api.settings_for("BPR", "ml-100k", "eb", config_dict={key: value})
    assert err.value.key == key
