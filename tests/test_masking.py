import pytest
import torch
from torch import nn

from recbole_lth.core.errors import ConfigError
from recbole_lth.core.masking import ParameterMask, select_prunable


class TwoTables(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.n_items = 30
        self.user_embedding = nn.Embedding(20, 6)
        self.item_embedding = nn.Embedding(30, 6)
        self.head = nn.Linear(6, 3)

    def loss(self):
        u = self.user_embedding.weight
        i = self.item_embedding.weight
        return (u @ i.T).sigmoid().sum() + self.head(u).pow(2).sum()


def _train(model, optimizer, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss().backward()
        optimizer.step()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.SGD(p, lr=0.005, momentum=0.9, weight_decay=0.1),
        lambda p: torch.optim.Adagrad(p, lr=0.05, weight_decay=0.1),
        lambda p: torch.optim.RMSprop(p, lr=0.05, weight_decay=0.1),
    ],
    ids=["adam", "adamw", "sgd-momentum", "adagrad", "rmsprop"],
)
def test_pruned_weights_stay_exactly_zero_through_optimizer_state(make_opt):
    model = TwoTables()
    optimizer = make_opt(model.parameters())
    _train(model, optimizer, 5)  # non-zero moments everywhere before pruning
    mask = ParameterMask.for_model(model, "embeddings")
    masks = {n: torch.rand_like(p) > 0.5 for n, p in mask.params.items()}
    mask.attach(optimizer)
    mask.set_masks(masks)
    _train(model, optimizer, 20)
    assert torch.isfinite(model.loss()), "diverged: the test would prove nothing"
    for name, param in mask.params.items():
        pruned = ~masks[name]
        assert torch.count_nonzero(param.detach()[pruned]) == 0, name
        assert torch.count_nonzero(param.detach()[~pruned]) == int(masks[name].sum())  # survivors trained
        for value in optimizer.state[param].values():
            if torch.is_tensor(value) and value.shape == param.shape:
                assert torch.count_nonzero(value[pruned]) == 0


def test_gradient_at_pruned_positions_is_observable_then_zeroed():
    model = TwoTables()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    mask = ParameterMask.for_model(model, "embeddings")
    masks = {n: torch.rand_like(p) > 0.5 for n, p in mask.params.items()}
    mask.set_masks(masks)
    mask.attach(optimizer)
    seen = {}

    def observer(m):
        seen.update({n: p.grad.clone() for n, p in m.params.items()})

    mask.grad_observers.append(observer)
    optimizer.zero_grad()
    model.loss().backward()
    optimizer.step()
    for name, param in mask.params.items():
        pruned = ~masks[name]
        # The forward used the (zero) weight itself, so its true gradient is there ...
        assert torch.count_nonzero(seen[name][pruned]) > 0
        # ... and it was zeroed before the step.
        assert torch.count_nonzero(param.grad[pruned]) == 0
    assert mask.step_count == 1


def test_report_counts():
    model = TwoTables()
    mask = ParameterMask.for_model(model, ["user_*"])
    m = torch.zeros(20, 6, dtype=torch.bool)
    m[:5] = True
    mask.set_masks({"user_embedding.weight": m})
    report = mask.report()
    assert report.total == 120 and report.total_active == 30 and report.total_nonzero == 30
    assert report.sparsity == pytest.approx(0.75)
    assert report.table_sparsity() == {"user_embedding.weight": pytest.approx(0.75)}


def test_selection_modes():
    model = TwoTables()
    assert list(select_prunable(model, "embeddings")) == ["user_embedding.weight", "item_embedding.weight"]
    assert list(select_prunable(model, "all_weights")) == [
        "user_embedding.weight", "item_embedding.weight", "head.weight"]
    assert list(select_prunable(model, ["head.*"])) == ["head.weight", "head.bias"]
    with pytest.raises(ConfigError, match="prune_params"):
        select_prunable(model, ["nothing*"])


class DriftingSGD(torch.optim.SGD):
    """An optimizer outside the zero-preserving set: it moves every weight."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(0.01)


def test_other_optimizers_get_the_post_step_rezero():
    model = TwoTables()
    optimizer = DriftingSGD(model.parameters(), lr=0.01)
    mask = ParameterMask.for_model(model, "embeddings")
    masks = {n: torch.rand_like(p) > 0.5 for n, p in mask.params.items()}
    mask.set_masks(masks)
    mask.attach(optimizer)
    _train(model, optimizer, 3)
    for name, param in mask.params.items():
        assert torch.count_nonzero(param.detach()[~masks[name]]) == 0
    # and without the hook the drift would have revived them
    mask.attach(optimizer, rezero_after_step=False)
    _train(model, optimizer, 1)
    assert any(torch.count_nonzero(p.detach()[~masks[n]]) > 0 for n, p in mask.params.items())


def test_trainer_builds_the_fused_optimizer_unless_disabled(tmp_path):
    from recbole_lth import api
    from recbole_lth.engine.trainer import sparse_trainer

    from conftest import QUICK

    for fused in (True, False):
        run = api.prepare(model="BPR", dataset="ml-100k", method="dense", config_dict={
            **QUICK, "fused_optimizer": fused, "output_root": str(tmp_path / str(fused))})
        mask = ParameterMask(run.prunable)
        trainer = sparse_trainer(run.config, run.model, mask)
        assert isinstance(trainer.optimizer, torch.optim.Adam)
        assert all(bool(g.get("fused")) is fused for g in trainer.optimizer.param_groups)
        assert mask.optimizer is trainer.optimizer
