"""DSL: schedule, exploration update, the hook in a real optimizer loop, and
short end-to-end runs of every backbone on ml-100k."""
import csv
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recbole_lth.api import settings_for
from recbole_lth.core import checkpoint
from recbole_lth.sparse import dynamic
from recbole_lth.sparse.dynamic import (
    Explorer, GradientGrow, Schedule, drop_fraction, exchange, exchange_counts, magnitude_drop,
)
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.masking import ParameterMask
from recbole_lth.core.pruning import kept_count
from recbole_lth.engine.run import TicketHook


# ------------------------------------------------------------------ schedule
def test_drop_fraction_follows_each_decay():
    rho0, end = 0.5, 1000
    assert drop_fraction(0, rho0, end, "cosine") == pytest.approx(0.5)
    assert drop_fraction(500, rho0, end, "cosine") == pytest.approx(0.25)
    assert drop_fraction(250, rho0, end, "cosine") == pytest.approx(0.25 * (1 + math.cos(math.pi / 4)))
    assert drop_fraction(250, rho0, end, "linear") == pytest.approx(0.375)
    assert drop_fraction(999, rho0, end, "linear") == pytest.approx(0.0005)
    assert drop_fraction(999, rho0, end, "constant") == 0.5
    for decay in ("cosine", "linear", "constant"):
        values = [drop_fraction(t, rho0, end, decay) for t in range(0, 1200, 50)]
        assert all(a >= b for a, b in zip(values, values[1:]))  # never increases
        assert drop_fraction(end, rho0, end, decay) == 0.0  # frozen from T_end on
        assert drop_fraction(end + 7, rho0, end, decay) == 0.0
    with pytest.raises(ValueError):
        drop_fraction(1, rho0, end, "step")


# ------------------------------------------------------------ one update
def dsl_update(weights, grads, masks, fraction, scope="global"):
    """One exploration as ``Explorer.observe`` makes it: the counts, then the
    magnitude drop and |grad| growth exchanged by ``exchange``."""
    active = {n: int(m.sum()) for n, m in masks.items()}
    counts = exchange_counts(active, {n: m.numel() for n, m in masks.items()}, fraction, scope)
    return exchange(magnitude_drop(weights), GradientGrow().scores(weights, grads), masks, counts)


def test_drops_smallest_active_and_regrows_largest_grad_inactive():
    weights = {"t": torch.tensor([[0.5, -0.1, 0.0, 0.3], [0.0, 0.05, 0.0, -0.9]])}
    masks = {"t": weights["t"] != 0}  # active: 0.5, -0.1, 0.3, 0.05, -0.9
    # Large gradients at active positions, including the ones about to be
    # dropped: none of them may be "regrown".
    grads = {"t": torch.tensor([[9.0, 9.0, 0.2, 9.0], [-0.7, 9.0, 0.1, 9.0]])}
    new = dsl_update(weights, grads, masks, fraction=0.4)  # round(0.4 * 5) = 2 exchanged
    expected = torch.tensor([[True, False, True, True], [True, False, False, True]])
    assert torch.equal(new["t"], expected)


def test_global_scope_moves_budget_between_tables_per_table_keeps_it():
    weights = {"a": torch.full((10,), 5.0), "b": torch.full((10,), 0.01)}
    weights["a"][5:] = 0
    weights["b"][5:] = 0
    masks = {n: w != 0 for n, w in weights.items()}
    grads = {"a": torch.ones(10), "b": torch.zeros(10)}
    glob = dsl_update(weights, grads, masks, 0.4, "global")  # 4 exchanged: drop in b, grow in a
    assert int(glob["a"].sum()) == 9 and int(glob["b"].sum()) == 1
    per = dsl_update(weights, grads, masks, 0.4, "per_table")  # 2 per table
    assert int(per["a"].sum()) == 5 and int(per["b"].sum()) == 5
    assert not torch.equal(per["a"], masks["a"]) and not torch.equal(per["b"], masks["b"])


@pytest.mark.parametrize("scope", ["global", "per_table"])
def test_budget_exactly_constant_and_sets_disjoint(scope):
    gen = torch.Generator().manual_seed(0)
    weights = {"u": torch.randn(50, 8, generator=gen), "i": torch.randn(70, 8, generator=gen)}
    masks = {n: torch.rand(w.shape, generator=gen) < 0.3 for n, w in weights.items()}
    budget = {n: int(m.sum()) for n, m in masks.items()}
    total = sum(budget.values())
    for step in range(1, 25):  # rho_t * active stays >= 1 weight up to here
        grads = {n: torch.randn(w.shape, generator=gen) for n, w in weights.items()}
        new = dsl_update(weights, grads, masks, drop_fraction(step, 0.5, 30), scope)
        dropped = {n: masks[n] & ~new[n] for n in masks}
        grown = {n: new[n] & ~masks[n] for n in masks}
        assert sum(int(m.sum()) for m in new.values()) == total
        assert sum(int(d.sum()) for d in dropped.values()) == sum(int(g.sum()) for g in grown.values()) > 0
        if scope == "per_table":
            assert {n: int(m.sum()) for n, m in new.items()} == budget
        for n in masks:  # pruned weights are zero, as in the mask core
            weights[n] = (weights[n] + 0.1 * torch.randn(weights[n].shape, generator=gen)) * new[n]
        masks = new


def test_fraction_larger_than_the_inactive_pool_is_capped():
    weights = {"t": torch.arange(1.0, 11.0)}
    masks = {"t": torch.arange(10) < 9}  # 9 active, 1 inactive
    new = dsl_update(weights, {"t": torch.ones(10)}, masks, 0.5)
    assert int(new["t"].sum()) == 9 and bool(new["t"][9]) and not bool(new["t"][0])


# ------------------------------------------- the hook in an optimizer loop
def test_explorer_in_adam_loop_regrows_at_zero_with_fresh_state():
    torch.manual_seed(0)
    model = nn.Embedding(40, 6)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    param = model.weight
    mask = ParameterMask({"weight": param}, {"weight": torch.rand(40, 6) < 0.4})
    mask.attach(opt)
    budget = int(mask.masks["weight"].sum())
    explorer = Explorer(Schedule(interval=3, init_ratio=0.5, end_step=20, decay="cosine"), scope="global")
    trainer = SimpleNamespace(mask=mask, model=model, config={"train_batch_size": 8}, epoch_callbacks=[],
                              stopping_step=10)
    explorer.attach(None, trainer)

    seen = []
    before = {}

    def snapshot(m):  # runs just before the explorer (inserted first)
        before["mask"] = m.masks["weight"].clone()
        before["state"] = {k: v.clone() for k, v in opt.state[param].items()} if opt.state[param] else None

    def check(m):  # runs just after the explorer, before the step
        new_mask = m.masks["weight"]
        if torch.equal(new_mask, before["mask"]):
            return
        grown = new_mask & ~before["mask"]
        dropped = before["mask"] & ~new_mask
        assert int(new_mask.sum()) == budget
        assert grown.any() and dropped.any()
        assert torch.all(param[grown] == 0) and torch.all(param[dropped] == 0)
        state = opt.state[param]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.all(state[key][grown] == 0) and torch.all(state[key][dropped] == 0)
            assert before["state"][key][dropped].abs().sum() > 0  # there was state to reset
        seen.append((grown, param.grad.clone()))

    mask.grad_observers.insert(0, snapshot)
    mask.grad_observers.append(check)
    ids = torch.arange(40)
    target = torch.randn(40, 6)
    for step in range(1, 13):
        opt.zero_grad()
        loss = (model(ids) - target * step).pow(2).sum()
        loss.backward()
        opt.step()
        assert int((param != 0).sum()) <= budget
        assert torch.all(param[~mask.masks["weight"]] == 0)
        if step % 3 == 0:  # an exploration step: it changed the mask, and Adam restarted the regrown weights
            assert len(seen) == explorer.updates == step // 3
            grown, grad = seen[-1]
            # First Adam step from zero state: exp_avg = (1 - beta1) * g.
            assert torch.allclose(opt.state[param]["exp_avg"][grown], 0.1 * grad[grown])
    assert explorer.updates == len(seen) == 4  # steps 3, 6, 9, 12
    fields = explorer.row_fields()
    assert fields["dsl_updates"] == 4 and fields["dsl_exchanged"] > 0 and fields["explore_seconds"] > 0


from conftest import QUICK  # noqa: E402

QUICK_DSL = {**QUICK, "epochs": 3, "stopping_step": 5, "target_sparsities": [0.6], "dsl_update_epochs": 0.25}


# ------------------------------------------------------------------ checks
@pytest.mark.parametrize(
    "key,value",
    [
        ("dsl_decay", "step"), ("dsl_init_ratio", 0), ("dsl_init_ratio", 1.5),
        ("dsl_update_epochs", 0), ("dsl_update_epochs", "often"), ("dsl_end_epoch", 0), ("dsl_end_epoch", -1),
        ("dsl_grow", "moment"), ("dsl_drop", "gradient"),
        ("target_sparsities", [0.5, 1.0]), ("target_sparsities", []),
    ],
)
def test_bad_settings_are_refused(key, value):
    with pytest.raises(ConfigError) as err:
        settings_for("BPR", "ml-100k", "dsl", config_dict={key: value})
    assert err.value.key == key


# -------------------------------------------------------------- end to end
def _rows(result):
    return list(csv.DictReader(open(result.results_csv)))


def test_interval_beyond_the_run_is_exactly_rp(quick_run):
    common = dict(epochs=1, target_sparsities=[0.7])
    rp = quick_run("BPR", "rp", **common)
    dsl = quick_run("BPR", "dsl", dsl_update_epochs=1000, **common)
    rp_ticket = checkpoint.load(rp.run_dir / "tickets" / "rp_0.7" / "ticket.pt")
    dsl_ticket = checkpoint.load(dsl.run_dir / "tickets" / "dsl_0.7" / "ticket.pt")
    for name, m in rp_ticket["masks"].items():
        assert torch.equal(m, dsl_ticket["masks"][name])
    rp_row, dsl_row = _rows(rp)[0], _rows(dsl)[0]
    assert dsl_row["dsl_updates"] == "0"
    assert dsl_row["test_recall@20"] == rp_row["test_recall@20"]


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "NeuMF", "MultiVAE", "CDAE"])
def test_every_backbone_trains_with_exploration(quick_run, model):
    sparsity = 0.6
    scope = "per_table" if model == "BPR" else "global"
    extra = {
        # NeuMF's sizes are its own keys (not embedding_size); small keeps its full sort quick.
        "NeuMF": {"mf_embedding_size": 16, "mlp_embedding_size": 16, "mlp_hidden_size": [16]},
        # The autoencoders batch users (943): smaller batches give several steps.
        "MultiVAE": {"train_batch_size": 256},
        "CDAE": {"train_batch_size": 256},
    }.get(model, {})
    result = quick_run(
        model, "dsl", epochs=1, target_sparsities=[sparsity], dsl_update_epochs=0.1, prune_scope=scope, **extra
    )
    row = _rows(result)[0]
    assert int(row["dsl_updates"]) >= 1 and int(row["dsl_exchanged"]) > 0, row
    total = int(row["prunable_params"])
    ticket = checkpoint.load(result.run_dir / "tickets" / "dsl_0.6" / "ticket.pt")
    if scope == "per_table":
        budget = sum(kept_count(m.numel(), sparsity) for m in ticket["masks"].values())
    else:
        budget = kept_count(total, sparsity)
    assert int(row["active_params"]) == budget == sum(int(m.sum()) for m in ticket["masks"].values())
    for name, m in ticket["masks"].items():  # the stored weights obey the stored mask
        assert torch.all(ticket["state_dict"][name][~m] == 0)
    assert int(row["nonzero_params"]) <= budget
    assert float(row["explore_fraction"]) > 0 and float(row["explore_seconds"]) > 0  # the updates were timed
    assert float(row["macs_train_rel"]) < 1.0  # training reads the pruned tables: some MACs are saved
    if model == "BPR":  # per-table sparsity 0.6 on both tables
        assert float(row["macs_infer_rel"]) == pytest.approx(1 - sparsity, abs=1e-3)
    if model == "LightGCN":  # dense propagated embeddings dominate full-sort scoring
        assert float(row["macs_infer_rel"]) > float(row["macs_train_rel"])


# ------------------------------------------------------- grow and drop pieces
def test_grow_scores_and_what_they_need():
    weights = {"t": torch.tensor([1.0, 0.0, 0.0, 0.0])}
    grads = [{"t": torch.tensor([0.0, 1.0, -3.0, 0.5])}, {"t": torch.tensor([0.0, 1.0, 2.0, 0.5])}]
    accumulated = dynamic.AccumulatedGradientGrow()
    for g in grads:
        accumulated.observe(g)
    # The last batch alone favours position 2; over the interval the -3 and +2 cancel.
    assert torch.equal(dynamic.GradientGrow().scores(weights, grads[-1])["t"], torch.tensor([0.0, 1.0, 2.0, 0.5]))
    assert torch.equal(accumulated.scores(weights, grads[-1])["t"], torch.tensor([0.0, 2.0, 1.0, 1.0]))
    accumulated.reset()
    assert float(accumulated.scores(weights, grads[-1])["t"].abs().sum()) == 0.0
    # One exchange: the only active weight is dropped, the best-scored inactive one grown.
    masks = {"t": torch.tensor([True, False, False, False])}
    grown = dynamic.exchange(dynamic.magnitude_drop(weights), {"t": torch.tensor([0.0, 2.0, 1.0, 1.0])}, masks, 1)
    assert torch.equal(grown["t"], torch.tensor([False, True, False, False]))
    assert [g.dense_gradient for g in (dynamic.GradientGrow(), dynamic.AccumulatedGradientGrow(),
                                       dynamic.RandomGrow())] == ["update_steps", "every_step", "never"]


def test_training_macs_follow_the_grow_rule():
    schedule = Schedule(interval=10, init_ratio=0.5, end_step=60)
    fractions = {}
    for name, grow in (("gradient", dynamic.GradientGrow()), ("accumulated", dynamic.AccumulatedGradientGrow()),
                       ("random", dynamic.RandomGrow())):
        explorer = Explorer(schedule, "global", grow=grow)
        explorer.updates = 5
        fractions[name] = explorer.dense_gradient_fraction(steps=100)
    assert fractions == {"gradient": 0.05, "accumulated": 0.6, "random": 0.0}


class EpochMasks(TicketHook):
    """Records the mask after every training epoch (what validation sees) and
    makes epoch 0 the best on validation, whatever the real scores."""

    def __init__(self):
        self.masks, self.weights = [], []

    def attach(self, run, trainer):
        def record(trainer, epoch_idx):
            self.masks.append({n: m.clone().cpu() for n, m in trainer.mask.masks.items()})
            self.weights.append({n: p.detach().clone().cpu() for n, p in trainer.mask.params.items()})

        trainer.epoch_callbacks.append(record)
        real_valid = trainer._valid_epoch
        calls = []

        def worse_every_time(valid_data, show_progress=False):
            score, result = real_valid(valid_data, show_progress)
            calls.append(1)
            return score - 0.1 * len(calls), result

        trainer._valid_epoch = worse_every_time


def test_reported_dsl_ticket_is_the_best_epochs_mask_and_weights(tmp_path):
    from recbole_lth import api, methods

    run = api.prepare(model="BPR", dataset="ml-100k", method="dsl", config_dict={
        **QUICK_DSL, "output_root": str(tmp_path / "runs")})
    recorder = EpochMasks()
    run.ticket_hooks.append(recorder)
    methods.get("dsl").plan(run)
    (row,) = run.rows
    assert row["best_epoch"] == 0 and row["epochs_trained"] == 3 and row["dsl_updates"] >= 2
    assert not all(torch.equal(recorder.masks[0][n], recorder.masks[-1][n]) for n in run.prunable)
    stored = checkpoint.load(run.run_dir / "tickets" / "dsl_0.6" / "ticket.pt")
    for name in run.prunable:  # RecBole's fit called our _save_checkpoint at epoch 0 only
        assert torch.equal(stored["masks"][name], recorder.masks[0][name])
        assert torch.equal(stored["state_dict"][name], recorder.weights[0][name])


class WorseEveryEvaluation(TicketHook):
    """Validation that only gets worse: early stopping ends a ticket at its second evaluation."""

    def attach(self, run, trainer):
        real_valid, calls = trainer._valid_epoch, []

        def worse(valid_data, show_progress=False):
            score, result = real_valid(valid_data, show_progress)
            calls.append(1)
            return score - len(calls), result

        trainer._valid_epoch = worse


def test_an_early_stopped_dsl_ticket_still_runs_its_explorations(tmp_path):
    from recbole_lth import api, methods

    def run(method):
        own = {"dsl_update_epochs": 1, "dsl_end_epoch": 4} if method == "dsl" else {}  # rp refuses dsl's keys
        prepared = api.prepare(model="BPR", dataset="ml-100k", method=method, config_dict={
            **QUICK, "epochs": 8, "stopping_step": 0, "target_sparsities": [0.6], **own,
            "output_root": str(tmp_path / method)})
        prepared.ticket_hooks.append(WorseEveryEvaluation())
        methods.get(method).plan(prepared)
        return prepared.rows[0]

    assert run("rp")["epochs_trained"] == 2  # a static ticket stops at its second evaluation
    held = run("dsl")
    # The DSL ticket trains through T_end (the end of epoch 4): explorations at the ends of epochs
    # 1, 2 and 3, the mask frozen in the fourth (index 3); early stopping then counts again and
    # ends the ticket at that epoch's evaluation.
    assert held["dsl_updates"] == 3 and held["dsl_frozen_epoch"] == 3
    assert held["epochs_trained"] == 4 and held["best_epoch"] == 0


def test_schedule_is_in_epochs_whatever_the_dataset_size():
    from recbole_lth.methods.dsl import schedule

    settings = {"dsl_update_epochs": 0.5, "dsl_end_epoch": 30, "dsl_init_ratio": 0.5, "dsl_decay": "cosine",
                "dsl_min_ratio": 0.0,
                "epochs": 100}
    small, large = schedule(settings, 40), schedule(settings, 4000)
    assert (small.interval, small.end_step) == (20, 1200) and (large.interval, large.end_step) == (2000, 120000)
    assert schedule({**settings, "dsl_end_epoch": None}, 40).end_step == 4000  # null: every epoch


# ------------------------------------------- the authors' variant (options)
def test_a_ratio_floor_holds_until_t_end_then_the_mask_freezes():
    schedule = Schedule(interval=10, init_ratio=0.5, end_step=1000, decay="cosine", min_ratio=0.005)
    assert schedule.fraction(0) == pytest.approx(0.5)
    assert schedule.fraction(500) == pytest.approx(0.005 + 0.495 / 2)
    assert schedule.fraction(999) == pytest.approx(0.005, abs=1e-5)  # never below the floor before T_end
    assert schedule.fraction(1000) == 0.0 and not schedule.is_update_step(1000)
    with pytest.raises(ConfigError, match="dsl_min_ratio"):
        settings_for("BPR", "ml-100k", "dsl", config_dict={"dsl_min_ratio": 0.5, "dsl_init_ratio": 0.5})


def test_regrow_dropped_lets_a_just_dropped_weight_come_back():
    masks = {"t": torch.tensor([True, True, False, False])}
    drop = {"t": torch.tensor([0.1, 5.0, 0.0, 0.0])}  # index 0 is dropped
    grow = {"t": torch.tensor([9.0, 0.0, 1.0, 2.0])}  # ... and has the highest grow score
    assert torch.equal(exchange(drop, grow, masks, 1)["t"], torch.tensor([False, True, False, True]))
    assert torch.equal(exchange(drop, grow, masks, 1, regrow_dropped=True)["t"], masks["t"])


def test_warm_state_keeps_adam_tracking_inactive_weights_which_stay_zero():
    torch.manual_seed(0)
    model = nn.Embedding(6, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    mask = ParameterMask({"w": model.weight}, {"w": torch.tensor([[True, False]] * 6)})
    mask.attach(opt)
    mask.keep_optimizer_state()
    for _ in range(3):
        opt.zero_grad()
        model.weight.sum().backward()  # gradient 1 everywhere, pruned positions too
        opt.step()
    assert torch.all(model.weight[:, 1] == 0)  # pruned weights stay exactly zero ...
    assert torch.allclose(opt.state[model.weight]["exp_avg"][:, 1], torch.full((6,), 1 - 0.9 ** 3))  # ... warm
    warm = opt.state[model.weight]["exp_avg"][:, 1].clone()
    mask.set_masks({"w": torch.ones(6, 2, dtype=torch.bool)})  # regrow them
    assert torch.equal(opt.state[model.weight]["exp_avg"][:, 1], warm) and torch.all(model.weight[:, 1] == 0)
    # The default (fresh) state: the moments at pruned positions stay zero.
    fresh = ParameterMask({"w": nn.Embedding(6, 2).weight}, {"w": torch.tensor([[True, False]] * 6)})
    opt2 = torch.optim.Adam(fresh.params.values(), lr=0.1)
    fresh.attach(opt2)
    for _ in range(3):
        opt2.zero_grad()
        fresh.params["w"].sum().backward()
        opt2.step()
    assert torch.all(opt2.state[fresh.params["w"]]["exp_avg"][:, 1] == 0)


# ------------------------------------- the cumulative sum over looked-up rows
def test_add_rows_is_the_full_add_where_the_gradient_is_zero_elsewhere():
    total = torch.randn(7, 3)
    grad = torch.zeros(7, 3)
    ids = torch.tensor([5, 1, 5, 5])  # repeated, as a batch's lookups are
    grad[[1, 5]] = torch.randn(2, 3)
    expected = total + grad
    dynamic.add_rows(total, grad, ids)
    assert torch.equal(total, expected)


def test_looked_up_rows_keeps_a_table_read_by_lookups_only():
    lookups, read_whole = nn.Embedding(9, 2), nn.Embedding(9, 2)
    model = nn.ModuleDict({"a": lookups, "b": read_whole})
    rows = dynamic.LookedUpRows(model, ["a.weight", "b.weight"])
    ids = torch.tensor([2, 4])
    loss = model["a"](ids).sum() + model["b"](ids).sum() + read_whole.weight.sum()
    loss.backward()
    with torch.no_grad():
        model["a"](torch.tensor([8]))  # evaluation: not recorded
    taken = rows.take()
    assert torch.equal(taken["a.weight"], ids) and torch.equal(taken["b.weight"], ids)
    rows.verify({"a.weight": lookups.weight.grad, "b.weight": read_whole.weight.grad}, taken)
    assert list(taken) == ["a.weight"]  # b's gradient is non-zero outside its lookups: summed whole
    assert list(rows.take()) == ["a.weight"]
    model["b"](ids).sum().backward()  # its hook is gone
    assert rows.take()["a.weight"].numel() == 0


class SummedWhole(dynamic.LookedUpRows):
    """Every table summed whole (the O(table) add), as before the looked-up rows."""

    def verify(self, grads, rows):
        rows.clear()
        self.remove()
        self.verified = True


@pytest.mark.parametrize("model", ["BPR", "NeuMF"])
def test_summing_looked_up_rows_gives_the_same_masks_and_weights(tmp_path, monkeypatch, model):
    from recbole_lth import api, methods
    from conftest import quick_settings

    calls = []
    add_rows = dynamic.add_rows
    monkeypatch.setattr(dynamic, "add_rows", lambda *a: (calls.append(1), add_rows(*a)))
    recorded = {}
    for name, rows_class in (("rows", dynamic.LookedUpRows), ("whole", SummedWhole)):
        monkeypatch.setattr(dynamic, "LookedUpRows", rows_class)
        settings = quick_settings(model, **{**{k: v for k, v in QUICK_DSL.items() if k != "embedding_size"},
                                            "output_root": str(tmp_path / name), "epochs": 2,
                                            "dsl_grow": "cumulative_gradient", "train_batch_size": 2048})
        run = api.prepare(model=model, dataset="ml-100k", method="dsl", config_dict=settings)
        recorder = EpochMasks()
        run.ticket_hooks.append(recorder)
        methods.get("dsl").plan(run)
        recorded[name] = recorder
        if name == "rows":
            assert calls, "the looked-up rows were never used"
            calls.clear()
    assert not calls
    rows, whole = recorded["rows"], recorded["whole"]
    assert len(rows.masks) == 2 and not torch.equal(*(m[next(iter(m))] for m in (rows.masks[0], rows.masks[1])))
    for epoch in range(2):
        for name in rows.masks[epoch]:
            assert torch.equal(rows.masks[epoch][name], whole.masks[epoch][name])
            assert torch.equal(rows.weights[epoch][name], whole.weights[epoch][name])


def test_momentum_growth_needs_a_warm_state_and_regrows_by_the_first_moment():
    with pytest.raises(ConfigError) as err:
        settings_for("BPR", "ml-100k", "dsl", config_dict={"dsl_grow": "momentum"})
    assert err.value.key == "dsl_optimizer_state"
    settings_for("BPR", "ml-100k", "dsl", config_dict={"dsl_grow": "momentum", "dsl_optimizer_state": "warm"})

    torch.manual_seed(0)
    model = nn.Embedding(10, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    mask = ParameterMask({"weight": model.weight}, {"weight": torch.arange(20).view(10, 2) < 10})
    mask.attach(opt)
    mask.keep_optimizer_state()
    grow = dynamic.MomentumGrow()
    grow.bind(mask)
    assert torch.equal(grow.scores(mask.weights(), {})["weight"], torch.zeros(10, 2))  # no state yet
    target = torch.zeros(10, 2)
    target[9, 1] = 5.0  # only one inactive weight is pulled
    for _ in range(3):
        opt.zero_grad()
        (model.weight - target).pow(2).sum().backward()
        opt.step()
    scores = grow.scores(mask.weights(), {})["weight"]
    assert torch.equal(scores, opt.state[model.weight]["exp_avg"].abs())
    inactive = ~mask.masks["weight"]
    assert scores[9, 1] == scores[inactive].max() > 10 * scores[inactive].sort().values[-2]
    assert torch.all(model.weight[inactive] == 0)
