import math

import pytest
import torch

from recbole_lth.core import pruning


def _weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"user": torch.randn(37, 8, generator=g), "item": torch.randn(53, 8, generator=g) * 3}


@pytest.mark.parametrize("scope", ["global", "per_table"])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_k_rounds_reach_one_minus_one_minus_p_to_the_k(scope, p):
    weights = _weights()
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    for k in range(1, 8):
        # Survivors change between rounds as in IMP (retraining), here: fresh values.
        trained = {n: w * torch.rand_like(w) for n, w in weights.items()}
        new = pruning.magnitude_prune(trained, masks, pruning.imp_sparsity(p, k), scope)
        assert not (new["user"] & ~masks["user"]).any(), "a pruned weight was revived"
        masks = new
        expected = 1 - (1 - p) ** k
        if scope == "per_table":
            for n, m in masks.items():
                assert abs((m.numel() - int(m.sum())) - expected * m.numel()) <= 1
        else:
            total = sum(m.numel() for m in masks.values())
            pruned = sum(m.numel() - int(m.sum()) for m in masks.values())
            assert abs(pruned - expected * total) <= 1


def test_magnitude_prune_keeps_the_largest_surviving_magnitudes():
    w = {"t": torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.2, 0.05]])}
    mask = {"t": torch.tensor([[True, True, True], [False, True, True]])}  # 2.0 already pruned
    new = pruning.magnitude_prune(w, mask, sparsity=0.5, scope="global")["t"]
    # keep 3 of 6: among survivors the largest |w| are -5.0, 0.3, -0.2
    assert new.tolist() == [[False, True, True], [False, True, False]]


def test_global_scope_ranks_tables_together():
    w = {"small": torch.full((4, 2), 0.01), "large": torch.full((4, 2), 1.0)}
    masks = {n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()}
    glob = pruning.magnitude_prune(w, masks, 0.5, "global")
    assert int(glob["small"].sum()) == 0 and int(glob["large"].sum()) == 8
    per = pruning.magnitude_prune(w, masks, 0.5, "per_table")
    assert int(per["small"].sum()) == 4 and int(per["large"].sum()) == 4


@pytest.mark.parametrize("scope", ["global", "per_table"])
def test_random_mask_exact_count_and_seeded(scope):
    shapes = _weights()
    a = pruning.random_mask(shapes, 0.7, scope, seed=3)
    b = pruning.random_mask(shapes, 0.7, scope, seed=3)
    c = pruning.random_mask(shapes, 0.7, scope, seed=4)
    total = sum(t.numel() for t in shapes.values())
    if scope == "per_table":
        expected = sum(pruning.kept_count(t.numel(), 0.7) for t in shapes.values())
    else:
        expected = pruning.kept_count(total, 0.7)
    assert sum(int(m.sum()) for m in a.values()) == expected
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_imp_rounds_to_target():
    assert pruning.imp_rounds_to(0.2, 0.0) == 0
    assert pruning.imp_rounds_to(0.2, 0.2) == 1
    assert pruning.imp_rounds_to(0.2, 0.36) == 2
    k = pruning.imp_rounds_to(0.2, 0.9)
    assert pruning.imp_sparsity(0.2, k) >= 0.9 > pruning.imp_sparsity(0.2, k - 1)
    assert k == math.ceil(math.log(0.1) / math.log(0.8))
