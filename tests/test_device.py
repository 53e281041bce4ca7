"""The checks whose behaviour depends on the device, on ``cpu`` always and on
``cuda`` where there is one (skipped otherwise).

``benchmarks/gpu_check.py`` runs exactly this file on the GPU machine: the mask
core through every optimizer RecBole builds (fused where torch has a kernel),
DSL's exploration step, GMP's prune steps (no host sync), PEP's two recording paths (the host check the CPU
uses, the sync-free slots CUDA uses), compact lookups, the KD losses, our
checkpoints loaded with a map location, and an export reloaded compact.
Everything runs on one prepared BPR ml-100k run per device (one epoch).
"""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from recbole_lth import api
from recbole_lth.core import checkpoint, compact, pruning
from recbole_lth.core.masking import ParameterMask, select_prunable
from recbole_lth.core.pruning import kept_count
from recbole_lth.deploy import export
from recbole_lth.engine import builder
from recbole_lth.core.optim import LazyAdam, RowwiseAdagrad, read_rows_sparsely
from recbole_lth.engine.trainer import evaluation_trainer, invalidate_caches, sparse_trainer
from recbole_lth.methods import dsl, gmp, pep
from recbole_lth.sparse import distill

from conftest import QUICK

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]
# RecBole's learners (Trainer._build_optimizer).  sparse_adam is left out: torch's
# SparseAdam refuses the dense gradients of RecBole's nn.Embedding tables on any
# device (RecBole itself fails with it, with or without the plugin).
LEARNERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
            "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}
# PEP's thresholds start near zero and rise fast enough to cross 0.3 and 0.5 in one epoch.
SETTINGS = {**QUICK, "epochs": 1, "pep_init": -6.0, "pep_lr": 0.3, "pep_weight_decay": 1e-3, "pep_pressure": "l2",
            "dsl_update_epochs": 0.25, "target_sparsities": [0.5]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(device)``: one prepared BPR ml-100k run per device (dsl and pep keys set)."""
    cache = {}

    def get(device):
        if device not in cache:
            root = tmp_path_factory.mktemp(f"device-{device}")
            settings = {**SETTINGS, "use_gpu": device == "cuda", "gpu_id": "0", "output_root": str(root)}
            with contextlib.chdir(root):
                cache[device] = api.prepare(model="BPR", dataset="ml-100k", method=["dsl", "pep"],
                                            config_dict=settings)
            assert torch.device(cache[device].device).type == device
        return cache[device]

    return get


def _masked(run, sparsity=0.5, seed=0):
    model = copy.deepcopy(run.model)
    params = select_prunable(model, "embeddings")
    return model, ParameterMask(params, pruning.random_mask(params, sparsity, "global", seed=seed))


def _trainer(run, sparsity=0.5):
    model, mask = _masked(run, sparsity)
    return sparse_trainer(run.config, model, mask)


def _assert_exact(mask: ParameterMask, device: str):
    for name, param in mask.params.items():
        kept = mask.masks[name]
        assert param.device.type == kept.device.type == device, name
        assert torch.count_nonzero(param.detach()[~kept]) == 0, name  # pruned: exactly zero
        assert torch.count_nonzero(param.detach()[kept]) == int(kept.sum()), name  # survivors trained


# ------------------------------------------------------------------ mask core
@pytest.mark.parametrize("learner", list(LEARNERS))
@pytest.mark.parametrize("device", DEVICES)
def test_mask_core_keeps_pruned_weights_zero_through_every_recbole_optimizer(runs, device, learner, tmp_path):
    run = runs(device)
    with builder.config_values(run.config, {"learner": learner, "weight_decay": 0.01}):
        trainer = _trainer(run)
    optimizer = trainer.optimizer
    assert type(optimizer) is LEARNERS[learner] and trainer.mask.optimizer is optimizer
    # torch has a fused kernel for adam, adamw and sgd on both devices, for adagrad on the CPU only
    fusable = learner in ("adam", "adamw", "sgd") or (learner == "adagrad" and device == "cpu")
    assert all(bool(group.get("fused")) == fusable for group in optimizer.param_groups)
    before = {n: p.detach().clone() for n, p in trainer.mask.params.items()}
    trainer._train_epoch(run.train_data, 0, show_progress=False)
    _assert_exact(trainer.mask, device)
    assert all(not torch.equal(before[n], p) for n, p in trainer.mask.params.items())  # it did train
    for name, param in trainer.mask.params.items():
        for value in optimizer.state[param].values():
            if torch.is_tensor(value) and value.shape == param.shape:
                assert torch.count_nonzero(value[~trainer.mask.masks[name]]) == 0, (name, learner)


@pytest.mark.parametrize("learner", ["sparse_adam", "rowwise_adagrad"])
@pytest.mark.parametrize("device", DEVICES)
def test_row_sparse_learners_keep_pruned_weights_zero_and_move_only_looked_up_rows(runs, device, learner):
    """``learner: sparse_adam`` / ``rowwise_adagrad`` on the device: the tables' gradients are row-sparse,
    a pruned weight stays exactly zero, and the CPU and the device take the same steps."""
    run = runs(device)
    model, mask = _masked(run)
    read_rows_sparsely(model)
    with builder.config_values(run.config, {"learner": learner, "weight_decay": 0.0}):
        trainer = sparse_trainer(run.config, model, mask)
    assert type(trainer.optimizer) is {"sparse_adam": LazyAdam, "rowwise_adagrad": RowwiseAdagrad}[learner]
    before = {n: p.detach().clone() for n, p in mask.params.items()}
    trainer._train_epoch(run.train_data, 0, show_progress=False)
    _assert_exact(mask, device)
    assert all(not torch.equal(before[n], p) for n, p in mask.params.items())
    # The same few steps on a table of the CPU and one of the device agree within float noise.
    ends = []
    for where in ("cpu", device):
        table = torch.nn.Embedding(300, 8).to(where)
        with torch.no_grad():
            table.weight.copy_(torch.linspace(-1, 1, 2400).reshape(300, 8))
        read_rows_sparsely(table)
        optimizer = (LazyAdam if learner == "sparse_adam" else RowwiseAdagrad)(table.parameters(), lr=0.05)
        for step in range(4):
            ids = (torch.arange(64) * (step + 3)) % 300
            optimizer.zero_grad()
            (table(ids.to(where)) ** 2).sum().backward()
            optimizer.step()
        ends.append(table.weight.detach().cpu())
    assert torch.allclose(ends[0], ends[1], atol=1e-6)


# ----------------------------------------------------------------------- DSL
@pytest.mark.parametrize("device", DEVICES)
def test_dsl_exploration_moves_the_mask_at_a_fixed_budget_on_the_device(runs, device):
    run = runs(device)
    trainer = _trainer(run)
    explorer = dsl.explorer(run)
    explorer.attach(run, trainer)
    start = trainer.mask.cpu_masks()
    trainer._train_epoch(run.train_data, 0, show_progress=False)
    assert explorer.updates >= 2 and explorer.explore_seconds > 0
    assert explorer.row_fields()["dsl_exchanged"] > 0
    now = trainer.mask.cpu_masks()
    assert sum(int(m.sum()) for m in now.values()) == sum(int(m.sum()) for m in start.values())
    assert any(not torch.equal(now[n], start[n]) for n in now)
    _assert_exact_zero(trainer.mask, device)


def _assert_exact_zero(mask: ParameterMask, device: str):
    for name, param in mask.params.items():
        assert param.device.type == mask.masks[name].device.type == device
        assert torch.count_nonzero(param.detach()[~mask.masks[name]]) == 0, name


# ----------------------------------------------------------------------- PEP
@pytest.mark.parametrize("device", DEVICES)
def test_pep_host_check_and_sync_free_recording_give_the_same_masks(runs, device):
    run = runs(device)
    targets = [0.3, 0.5]
    results = {}
    for host_check in (True, False):
        search = pep.PepSearch(run, targets, host_check=host_check)
        assert search.keep.device.type == device
        results[host_check] = search.fit()
    total = sum(p.numel() for p in run.prunable.values())
    host, free = results[True], results[False]
    assert [e["reached"] for e in host["meta"]["targets"]] == [True, True]
    assert [e["search_step"] for e in free["meta"]["targets"]] == [e["search_step"] for e in host["meta"]["targets"]]
    assert host["masks"].keys() == free["masks"].keys() and len(host["masks"]) == 4
    for key, mask in host["masks"].items():
        assert torch.equal(free["masks"][key], mask), key
    for t, target in enumerate(targets):
        assert sum(int(m.sum()) for k, m in free["masks"].items() if k.startswith(f"{t}/")) == kept_count(total, target)


# ----------------------------------------------------------------------- GMP
@pytest.mark.parametrize("device", DEVICES)
def test_gmp_prunes_to_exact_counts_on_the_device_with_no_host_sync(runs, device, monkeypatch):
    import dataclasses

    run = runs(device)
    keys = {"gmp_start_epoch": 0, "gmp_end_epoch": 1, "gmp_frequency": 3, "gmp_schedule": "cubic",
            "gmp_ticket": "trained", "target_sparsities": [0.3, 0.5]}
    run = dataclasses.replace(run, settings={**run.settings, **keys})
    after_step = gmp.GradualPruning.after_step

    def strict(self, *args):
        if device == "cuda":  # any host sync inside the step hook (prune steps included) raises
            torch.cuda.set_sync_debug_mode("error")
        try:
            return after_step(self, *args)
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(gmp.GradualPruning, "after_step", strict)
    search = gmp.GradualPruning(run, keys["target_sparsities"])
    result = search.fit()
    total = sum(p.numel() for p in run.prunable.values())
    assert search.prunes >= 3 and set(search.recorded) == {0, 1}
    for t, target in enumerate(keys["target_sparsities"]):
        assert search.recorded[t]["masks"]["user_embedding.weight"].device.type == device
        assert sum(int(m.sum()) for k, m in result["masks"].items()
                   if k.startswith(f"{t}/") and "/weights/" not in k) == kept_count(total, target)
    _assert_exact_zero(search.mask, device)
    run.restart(run.init_state())  # the shared run's model, as the other checks expect it


# --------------------------------------------------------------- compact
@pytest.mark.parametrize("value_format", ["fp32", "int8"])
@pytest.mark.parametrize("device", DEVICES)
def test_compact_lookups_on_the_device_are_the_masked_rows(device, value_format):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 13, generator=generator).to(device)
    mask = (torch.rand(50, 13, generator=generator) < 0.3).to(device)
    mask[7] = False  # an empty row
    table = compact.CompactTable.from_rows(weight, mask, value_format, remap=True, chunk_rows=8)
    index = torch.tensor([[0, 7, 49], [3, 3, 12]], device=device)
    rows = table.rows(index)
    assert rows.device.type == device and rows.shape == (2, 3, 13)
    expected = (weight * mask)[index]
    if value_format == "fp32":
        assert torch.equal(rows, expected)
    else:  # within half a quantisation step of each row's range, pruned entries exactly zero
        span = (weight * mask).abs().amax(1, keepdim=True)[index] * 2 / 255
        assert torch.all((rows - expected).abs() <= span / 2 + 1e-6)
    assert torch.count_nonzero(rows[~mask[index]]) == 0
    queries = torch.randn(4, 13, generator=generator).to(device)
    torch.testing.assert_close(compact.stream_scores(queries, table), queries @ table.dense().T)


# --------------------------------------------------------------------- KD
@pytest.mark.parametrize("kd_type", ["ranking", "score"])
@pytest.mark.parametrize("device", DEVICES)
def test_kd_losses_train_the_student_against_a_frozen_teacher_on_the_device(runs, device, kd_type):
    run = runs(device)
    teacher_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    settings = {**run.settings, "kd_weight": 1.0, "kd_type": kd_type}
    distiller = distill.Distiller(settings, teacher_state)
    trainer = _trainer(run)
    distiller.attach(run, trainer)
    assert distiller.active
    batch = next(iter(run.train_data)).to(run.device)
    loss = distiller.kd_loss(trainer.model, batch)
    assert loss.device.type == device and torch.isfinite(loss) and float(loss.detach()) > 0
    if kd_type == "ranking":
        assert distiller.teacher_topk.device.type == device
        assert distiller.teacher_topk.shape == (run.train_data.dataset.user_num, settings["kd_topk"])
    # The student equal to the teacher: the score loss is exactly zero.
    same = torch.randn(5, 7, device=device)
    assert float(distill.score_kd_loss(same, same.clone(), 2.0, softmax=True)) == pytest.approx(0.0, abs=1e-7)
    trainer._train_epoch(run.train_data, 0, show_progress=False)
    _assert_exact_zero(trainer.mask, device)
    for name, value in distiller.teacher.state_dict().items():
        assert torch.equal(value.cpu(), teacher_state[name].cpu()), name  # frozen


# ------------------------------------------------- checkpoints and exports
@pytest.mark.parametrize("device", DEVICES)
def test_checkpoints_load_with_a_map_location_and_exports_reload_compact(runs, device, tmp_path):
    run = runs(device)
    trainer = _trainer(run)
    trainer._train_epoch(run.train_data, 0, show_progress=False)
    state, masks = trainer.model.state_dict(), trainer.mask.masks

    path = tmp_path / "ticket.pt"
    checkpoint.save(path, state_dict=state, masks=masks, meta={"device": device})
    for location in ("cpu", device):
        payload = checkpoint.load(path, map_location=location)
        assert {v.device.type for v in payload["state_dict"].values()} == {location}
        for name, value in state.items():
            assert torch.equal(payload["state_dict"][name].cpu(), value.cpu()), name
        for name, value in masks.items():
            assert torch.equal(payload["masks"][name].cpu(), value.cpu()), name

    exported = export.write_export(tmp_path / "ticket.export.pt", state, masks)
    unpacked, stored_masks, _ = export.read_export(exported, map_location=device)
    for name in masks:
        assert unpacked[name].device.type == device
        assert torch.equal(unpacked[name].cpu(), state[name].cpu()) and torch.equal(stored_masks[name].cpu(),
                                                                                   masks[name].cpu())
    model = export.compact_model(exported, run.config, run.train_data.dataset)
    assert {b.device.type for b in model.buffers()} == {device}
    invalidate_caches(trainer.model)
    with contextlib.chdir(tmp_path):
        dense = evaluation_trainer(run.config, trainer.model.eval()).evaluate(run.test_data, load_best_model=False)
        small = evaluation_trainer(run.config, model.eval()).evaluate(run.test_data, load_best_model=False)
    assert dense["recall@20"] > 0
    for metric, value in dense.items():
        assert small[metric] == pytest.approx(value, abs=1e-4), metric
