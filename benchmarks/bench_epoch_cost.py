"""Epoch cost of every method relative to the dense model, and the cost of one validation.

Side by side in one process (variants alternate epoch by epoch; medians of
``--epochs`` timed epochs after one warm-up), on one prepared RecBole run:

* ``dense``: our trainer with a full mask (the pipeline's dense ticket);
* ``masked``: a static random mask at ``--sparsity`` (what imp/omp/rp/snip tickets train with);
* ``dsl``: the same mask with DSL's exploration at its defaults (``properties/dsl.yaml``);
* ``pep``: one epoch of PEP's threshold search (defaults of ``properties/pep.yaml``);
* ``kd``: the masked ticket distilled (ranking KD) from a frozen dense teacher;
* ``small_dense``: the same backbone with ⌈d·(1-s)⌉-wide tables;
* ``recbole``: RecBole's untouched trainer (for reference).

Then one full-sort validation with RecBole's ``eval_batch_size`` default
(4096: ``4096 // n_items`` users per batch) and with the plugin's
``eval_memory_mb`` budget, both through the plugin's trainer, RecBole's
untouched ``Trainer.evaluate`` at the budget, and the floor: the same users'
scores as plain batched matrix products and a ``topk``.  Each validation
builds a new loader; the plugin's index of a loader (built once, at its
first validation) is timed on a row of its own.

    python benchmarks/bench_epoch_cost.py --dataset yelp2018 --models BPR --epochs 3
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import partial
import sys
from time import perf_counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402

from common import (FirstSteps, Setup, alternate, arg_parser, masked_trainer, prepare_run, recbole_trainer,  # noqa: E402
                    show, sync)

from recbole_lth.core.masking import ParameterMask, select_prunable  # noqa: E402
from recbole_lth.engine import builder, evaluation  # noqa: E402
from recbole_lth.engine.trainer import sparse_trainer  # noqa: E402
from recbole_lth.methods import dsl, pep  # noqa: E402
from recbole_lth.methods.small_dense import small_sizes  # noqa: E402
from recbole_lth.sparse import distill  # noqa: E402

BENCHMARK_SPLITS = ("yelp2018", "lastfm", "citeulike")


def _dense_trainer(run, model=None):
    model = model or copy.deepcopy(run.model)
    return sparse_trainer(run.config, model, ParameterMask(select_prunable(model, "embeddings")))


def epoch_variants(run, sparsity: float, max_steps: int = 0) -> dict:
    """``{name: train one epoch(e)}`` over copies of the run's model (of its
    first ``max_steps`` batches, when set)."""
    data = FirstSteps(run.train_data, max_steps) if max_steps else run.train_data
    trainers = {"recbole": recbole_trainer(run), "dense": _dense_trainer(run)}
    trainers["masked"] = masked_trainer(run, sparsity)

    trainers["dsl"] = masked_trainer(run, sparsity)
    explorer = dsl.explorer(run)
    explorer.attach(run, trainers["dsl"])

    search = pep.PepSearch(run, [min(0.99, sparsity + 0.15)])
    trainers["pep"] = search.trainer()

    trainers["kd"] = masked_trainer(run, sparsity)
    teacher_state = {k: v.clone() for k, v in run.model.state_dict().items()}
    distiller = distill.Distiller({**run.settings, "kd_weight": 1.0, "kd_type": "ranking"}, teacher_state)
    distiller.attach(run, trainers["kd"])

    small = builder.new_model(run.config, data.dataset, small_sizes(run.config, sparsity))
    trainers["small_dense"] = _dense_trainer(run, small)

    def epoch(name):
        return lambda e: trainers[name]._train_epoch(data, e, show_progress=False)

    return {name: epoch(name) for name in trainers}, explorer, search


def _valid_loader(run, batch: int):
    from recbole.data import create_dataset, data_preparation

    with builder.config_values(run.config, {"eval_batch_size": batch}):
        builder.seed(run.config)
        return data_preparation(run.config, create_dataset(run.config))[1]


def _tables(model):
    """The user and item tables full-sort scoring multiplies (LightGCN: propagated once)."""
    if hasattr(model, "get_ego_embeddings"):
        return model.forward()
    return model.user_embedding.weight, model.item_embedding.weight


def validation_costs(run) -> dict:
    """Seconds of one full-sort validation: RecBole's default batch, the
    plugin's budget, and the floor (matmul + topk over the same users)."""
    config, n_items = run.config, run.train_data.dataset.item_num
    budget = builder.full_sort_batch_size(config, n_items, run.settings["eval_memory_mb"])
    trainer = _dense_trainer(run, run.model)
    seconds = {}
    cases = (("recbole default", 4096, trainer.evaluate), ("plugin budget", budget, trainer.evaluate),
             ("recbole evaluate, budget", budget, partial(Trainer.evaluate, trainer)))
    for name, batch, evaluate in cases:
        valid = _valid_loader(run, batch)
        if evaluate == trainer.evaluate:  # built once per loader: every epoch's validation finds it
            sync(run.device)
            started = perf_counter()
            evaluation.index_for(valid, run.device)
            sync(run.device)
            seconds[f"{name}: index, once"] = (perf_counter() - started, max(1, batch // n_items), len(valid))
        trainer.model.restore_user_e = trainer.model.restore_item_e = None  # LightGCN propagates again
        sync(run.device)
        started = perf_counter()
        evaluate(valid, load_best_model=False, show_progress=False)
        sync(run.device)
        seconds[name] = (perf_counter() - started, max(1, batch // n_items), len(valid))
    users = torch.as_tensor(valid.uid_list).to(run.device)
    chunk, k = max(1, budget // n_items), max(config["topk"])
    with torch.no_grad():
        sync(run.device)
        started = perf_counter()
        user_table, item_table = _tables(run.model)
        for start in range(0, len(users), chunk):
            (user_table[users[start:start + chunk]] @ item_table.T).topk(k, dim=1)
        sync(run.device)
    seconds["floor (matmul + topk)"] = (perf_counter() - started, chunk, -(-len(users) // chunk))
    return seconds


@dataclass
class EpochCosts:
    """One model's median seconds per epoch of each variant, and DSL's exploration."""

    model: str
    dataset: str
    steps: int  # timed steps per epoch
    steps_per_epoch: int
    device: str
    gathered: list  # names of PEP's gathered tables
    seconds: dict  # variant -> median s/epoch
    explorations: int
    explore_seconds: float

    def per_dense(self, variant: str) -> float:
        return self.seconds[variant] / self.seconds["dense"]

    def lines(self) -> list[str]:
        return [f"{self.model} on {self.dataset} ({self.steps} of {self.steps_per_epoch} steps/epoch timed, "
                f"device {self.device}); PEP's gathered tables: {self.gathered or 'none'}",
                f"{'variant':14s} {'s/epoch':>9s} {'/ dense':>8s}"] \
            + [f"{name:14s} {seconds:9.3f} {self.per_dense(name):8.3f}" for name, seconds in self.seconds.items()] \
            + [f"dsl: {self.explorations} explorations, {self.explore_seconds:.3f} s in them"]


@dataclass
class Validation:
    """One model's full-sort validations: ``{case: (seconds, users per batch, batches)}`` (see validation_costs)."""

    model: str
    costs: dict

    def per_floor(self, case: str) -> float:
        return self.costs[case][0] / self.costs["floor (matmul + topk)"][0]

    def lines(self) -> list[str]:
        return [f"{'validation':30s} {'seconds':>9s} {'users/batch':>12s} {'batches':>8s} {'/ floor':>8s}"] \
            + [f"{name:30s} {seconds:9.3f} {users:12d} {batches:8d} {self.per_floor(name):8.2f}"
               for name, (seconds, users, batches) in self.costs.items()]


def parse_args(argv=None):
    parser = arg_parser(__doc__.splitlines()[0])
    parser.set_defaults(dataset="yelp2018", models="BPR", epochs=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip_validation", action="store_true")
    parser.add_argument("--max_steps", type=int, default=0, help="time the first N steps of each epoch (0: all)")
    parser.add_argument("--variants", default="", help="comma-separated subset of the variants (default: all)")
    return parser.parse_args(argv)


def results(args):
    """The :class:`Setup`, then per model of ``--models`` its :class:`EpochCosts` and (unless
    ``--skip_validation``) its :class:`Validation`, each as it is measured."""
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"benchmark_filename": ["train", "valid", "test"]} if args.dataset in BENCHMARK_SPLITS else {}
    yield Setup.of(args)
    for model_name in args.models.split(","):
        run = prepare_run(model_name, args, method=["dsl", "pep"], **overrides)
        variants, explorer, search = epoch_variants(run, args.sparsity, args.max_steps)
        if args.variants:
            variants = {name: variants[name] for name in ["dense", *args.variants.split(",")] if name in variants}
        alternate(variants, 1, run.device)  # warm-up (allocator, caches, KD teacher top-k)
        medians = alternate(variants, args.epochs, run.device)
        search.step_hook.remove()
        steps = min(args.max_steps or len(run.train_data), len(run.train_data))
        yield EpochCosts(model_name, args.dataset, steps, len(run.train_data), str(run.device),
                         list(search.gathered), medians, explorer.updates, explorer.explore_seconds)
        if not args.skip_validation:
            yield Validation(model_name, validation_costs(run))


def main(argv=None) -> None:
    show(results(parse_args(argv)))


if __name__ == "__main__":
    main()
