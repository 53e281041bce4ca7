"""What a training step costs as the tables grow: every method with ``learner: adam`` and ``sparse_adam``.

For each ``--rows`` (users + items), a synthetic dataset is written (nothing
downloaded): ``--users`` users, the rest items, each item once and ``--interactions``
more pairs with Zipf item popularity (exponent ``--zipf``), users uniform,
duplicates dropped.  One prepared run per learner on it, and side by side in one
process (variants alternate round by round; medians of ``--repeats`` timed
rounds of ``--steps`` training steps after one warm-up round, the steps
RecBole's own loop takes, its data loader included):

* ``dense``: the dense ticket (a full mask);
* ``masked``: a static random mask at ``--sparsity``: what imp, omp, rp,
  snip, eb and gmp's tickets train with;
* ``dsl``: the same mask with DSL's exploration at its defaults;
* ``pep``: PEP's threshold search (its defaults);
* ``kd``: the masked ticket distilled from a frozen dense teacher (ranking KD).

Then one full-sort validation of the dense model (users × items scores), per
size, and with ``--study``, a real run (``--study_methods``, one epoch, a
process per learner) at the largest size: its wall time and peak memory.

    python benchmarks/bench_scale.py --rows 10000,100000,1000000 --models BPR
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import FirstSteps, REPO, alternate, masked_trainer, sync  # noqa: E402

from recbole_lth import api  # noqa: E402
from recbole_lth.core.masking import ParameterMask, select_prunable  # noqa: E402
from recbole_lth.engine.trainer import sparse_trainer  # noqa: E402
from recbole_lth.methods import dsl, pep  # noqa: E402
from recbole_lth.sparse import distill  # noqa: E402

LEARNERS = ("adam", "sparse_adam")
VARIANTS = ("dense", "masked", "dsl", "pep", "kd")


def write_dataset(folder: Path, rows: int, users: int, interactions: int, zipf: float, seed: int = 0) -> str:
    """A RecBole atomic file of ``users`` users and ``rows - users`` items; returns its dataset name."""
    items = rows - users
    name = f"zipf{rows}"
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Zipf over the items by rank: p(rank r) ∝ r^-zipf, items shuffled so popularity is not the id order.
    weights = np.arange(1, items + 1, dtype=np.float64) ** -zipf
    drawn = rng.permutation(items)[rng.choice(items, size=interactions, p=weights / weights.sum())] + 1
    # Every item once more (RecBole keeps only the ids it sees): the table has `rows` rows.
    item_ids = np.concatenate([np.arange(1, items + 1), drawn])
    user_ids = rng.integers(1, users + 1, size=item_ids.size)
    pairs = np.unique(np.stack([user_ids, item_ids], axis=1), axis=0)
    with open(target / f"{name}.inter", "w") as handle:
        handle.write("user_id:token\titem_id:token\n")
        np.savetxt(handle, pairs, fmt="%d", delimiter="\t")
    return name


def prepare(args, data_path: str, dataset: str, model: str, learner: str):
    settings = {
        "data_path": data_path, "state": "WARNING", "show_progress": False, "epochs": 1, "learner": learner,
        "output_root": tempfile.mkdtemp(prefix="lth-scale-"), "train_batch_size": args.batch,
        "embedding_size": args.dim, "use_gpu": bool(args.use_gpu), "gpu_id": args.gpu_id,
        # RecBole's ml-1m-like default split; every user keeps items to validate on.
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
    }
    if model == "NeuMF":
        settings = {k: v for k, v in settings.items() if k != "embedding_size"}
        settings.update(mf_embedding_size=args.dim, mlp_embedding_size=args.dim, mlp_hidden_size=[args.dim])
    return api.prepare(model=model, dataset=dataset, method=["dsl", "pep"], config_dict=settings)


def dense_trainer(run, args):
    model = copy.deepcopy(run.model)
    return sparse_trainer(run.config, model, ParameterMask(select_prunable(model, "embeddings")))


def dsl_trainer(run, args):
    trainer = masked_trainer(run, args.sparsity)
    dsl.explorer(run).attach(run, trainer)
    return trainer


def kd_trainer(run, args):
    trainer = masked_trainer(run, args.sparsity)
    teacher = {k: v.clone() for k, v in run.model.state_dict().items()}
    distill.Distiller({**run.settings, "kd_weight": 1.0, "kd_type": "ranking"}, teacher).attach(run, trainer)
    return trainer


BUILDERS = {
    "dense": dense_trainer,
    "masked": lambda run, args: masked_trainer(run, args.sparsity),
    "dsl": dsl_trainer,
    "pep": lambda run, args: pep.PepSearch(run, [min(0.99, args.sparsity + 0.15)]).trainer(),
    "kd": kd_trainer,
}


def variants(run, args) -> dict:
    """``{variant: trainer}`` on copies of the run's model."""
    return {name: BUILDERS[name](run, args) for name in args.variants.split(",")}


def step_costs(runs: dict, args) -> dict:
    """``{(learner, variant): seconds per step}``, all alternating in one loop."""
    fns = {}
    for learner, run in runs.items():
        data = FirstSteps(run.train_data, args.steps)
        for variant, trainer in variants(run, args).items():
            fns[(learner, variant)] = (lambda t, d: lambda e: t._train_epoch(d, e, show_progress=False))(trainer, data)
        steps = len(data)
    device = next(iter(runs.values())).device
    for fn in fns.values():  # warm-up: first allocations, the loaders' first batches
        fn(0)
    medians = alternate(fns, args.repeats, device)
    return {key: seconds / steps for key, seconds in medians.items()}


def validation_seconds(run) -> float:
    trainer = sparse_trainer(run.config, run.model, ParameterMask(select_prunable(run.model, "embeddings")))
    sync(run.device)
    started = perf_counter()
    trainer.evaluate(run.valid_data, load_best_model=False, show_progress=False)
    sync(run.device)
    return perf_counter() - started


# The child's own peak: VmHWM starts afresh at exec, where ru_maxrss keeps the forking parent's.
STUDY_CHILD = """
import re, sys, time
from recbole_lth.cli import main
started = time.perf_counter()
status = main(sys.argv[1:])
peak = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print(f"STUDY {status} {time.perf_counter() - started:.1f} {peak}")
"""


def study(args, data_path: str, dataset: str, model: str, learner: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GB) of a real run, in a process of its own."""
    out = tempfile.mkdtemp(prefix="lth-scale-study-")
    command = [sys.executable, "-c", STUDY_CHILD, f"--model={model}", f"--dataset={dataset}",
               f"--data_path={data_path}", f"--method=[{args.study_methods}]", "--epochs=1", "--state=WARNING",
               f"--learner={learner}", f"--train_batch_size={args.batch}", f"--target_sparsities=[{args.sparsity}]",
               f"--run_dir={out}/run", "--progress=False"]
    if model != "NeuMF":
        command.append(f"--embedding_size={args.dim}")
    done = subprocess.run(command, capture_output=True, text=True, cwd=out,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    line = [x for x in done.stdout.splitlines() if x.startswith("STUDY ")]
    if done.returncode or not line or line[-1].split()[1] != "0":
        raise SystemExit(f"the study failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    _, _, wall, kib = line[-1].split()
    return float(wall), int(kib) / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,300000,1000000", help="users + items, comma-separated")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--interactions", type=int, default=200_000)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--models", default="BPR,NeuMF")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per variant (median)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="which of them (each holds its own copy of the tables: memory at 1M rows)")
    parser.add_argument("--no_eval", action="store_true", help="skip the full-sort validation timing")
    parser.add_argument("--study", action="store_true", help="also a real run per learner at the largest size")
    parser.add_argument("--study_methods", default="dense,omp")
    parser.add_argument("--study_only", action="store_true", help="only the real runs (with --study)")
    parser.add_argument("--gpu_id", default="0")
    parser.add_argument("--use_gpu", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]
    data_path = tempfile.mkdtemp(prefix="lth-scale-data-")
    print(f"synthetic Zipf({args.zipf}) data: {args.users} users, {args.interactions} interactions drawn, d = "
          f"{args.dim}, batch {args.batch}, sparsity {args.sparsity}; ms per step, median of {args.repeats} rounds "
          f"of {args.steps} steps; torch {torch.__version__}, threads {torch.get_num_threads()}")
    costs = {}
    for model in args.models.split(","):
        if not args.study_only:
            step_table(args, model, sizes, data_path, costs)
        if args.study:
            dataset = write_dataset(Path(data_path), max(sizes), args.users, args.interactions, args.zipf)
            for learner in LEARNERS:
                wall, peak = study(args, data_path, dataset, model, learner)
                print(f"{model} study [{args.study_methods}], 1 epoch, {max(sizes):,} rows, {learner}: "
                      f"{wall:.1f} s wall, peak memory {peak:.2f} GB", flush=True)
    print(f"\npeak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB")


def step_table(args, model: str, sizes: list[int], data_path: str, costs: dict) -> None:
    """The step costs of every variant and learner at each size, and one validation per size."""
    print(f"\n{model}\n")
    print("| rows | users × items | variant | adam ms/step | sparse_adam ms/step | adam ÷ sparse_adam |")
    print("|---|---|---|---|---|---|")
    for rows in sizes:
        dataset = write_dataset(Path(data_path), rows, args.users, args.interactions, args.zipf)
        runs = {learner: prepare(args, data_path, dataset, model, learner) for learner in LEARNERS}
        cost = step_costs(runs, args)
        n_users, n_items = runs["adam"].train_data.dataset.user_num, runs["adam"].train_data.dataset.item_num
        for variant in args.variants.split(","):
            a, s = cost[("adam", variant)], cost[("sparse_adam", variant)]
            costs[(model, rows, variant)] = s
            print(f"| {rows:,} | {n_users:,} × {n_items:,} | {variant} | {a * 1e3:.1f} | {s * 1e3:.1f} | "
                  f"{a / s:.1f}× |", flush=True)
        if not args.no_eval:
            seconds = validation_seconds(runs["adam"])
            print(f"| {rows:,} | {n_users:,} × {n_items:,} | one full-sort validation | {seconds:.2f} s "
                  f"({seconds / (n_users * n_items) * 1e9:.2f} ns per user × item) | | |", flush=True)
        del runs
        gc.collect()
    small, large = min(sizes), max(sizes)
    print(f"\n{model}: sparse_adam step at {large:,} rows ÷ at {small:,} rows (target ≤ 2): " + ", ".join(
        f"{v} {costs[(model, large, v)] / costs[(model, small, v)]:.2f}" for v in args.variants.split(",")))


if __name__ == "__main__":
    main()
