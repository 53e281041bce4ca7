"""What a lottery-ticket comparison costs: one study against separate runs, early-bird against IMP.

Two measurements, each side by side in this one process (same settings,
same data, run one after the other on a quiet machine):

* ``--part study``: the wall time of one study of ``--methods`` (one run
  directory, one dense model shared) against one run per method (each
  trains what it needs itself: imp and omp their own dense model), and
  the tickets each trained.
* ``--part cheap``: IMP to round ``--rounds`` against the cheap searches of
  ``--against`` (``eb``: early-bird tickets on IMP's grid; ``gmp`` and
  ``gmp_rewind``: gradual magnitude pruning, its trained or rewound ticket;
  ``omp``) at exactly IMP's final sparsity, each alone in its run directory,
  per seed of ``--seeds``: test Recall@20, wall time against IMP's, and over
  the seeds the mean ± std and the paired Δ against IMP with its 95% CI.

    python benchmarks/bench_lottery.py --part cheap --dataset ml-1m \\
        --settings "learning_rate=0.005 eval_step=5 stopping_step=3"
    python benchmarks/bench_lottery.py --part cheap --dataset ml-100k --against eb,gmp,gmp_rewind,omp \\
        --seeds 2020,2021,2022 --settings "learning_rate=0.005 eval_step=5 stopping_step=3"
    python benchmarks/bench_lottery.py --part study --dataset ml-100k --rounds 3 \\
        --settings "learning_rate=0.005 eval_step=5 stopping_step=3"
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from statistics import fmean

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import DEFAULT_DATA, keys_of, study_config  # noqa: E402

import recbole_lth  # noqa: E402
from recbole_lth import methods  # noqa: E402
from recbole_lth.core import pruning  # noqa: E402

METRIC = "test_recall@20"


def timed(model, dataset, method, config):
    # --settings may hold keys of several methods (eb_*, gmp_*): each run gets its own
    chosen = method if isinstance(method, list) else [method]
    config = {k: v for k, v in config.items() if k not in methods.foreign_keys(config, chosen)}
    started = time.perf_counter()
    result = recbole_lth.run(model=model, dataset=dataset, method=method, config_dict=config)
    return time.perf_counter() - started, result


def trained(rows) -> int:
    return sum(1 for r in rows if r.get(METRIC) is not None)


def study(args, config) -> None:
    methods = args.methods.split(",")
    config = {**config, "target_sparsities": "imp"}
    wall, result = timed(args.model, args.dataset, methods, {**config, "run_dir": f"{args.out}/study"})
    separate = []
    for method in methods:
        seconds, single = timed(args.model, args.dataset, method, {**config, "run_dir": f"{args.out}/{method}"})
        separate.append((method, seconds, trained(single.rows)))
    total = sum(s for _, s, _ in separate)
    print(f"{args.model} on {args.dataset}, {args.settings or 'plugin defaults'}, rounds {args.rounds}")
    print("| runs | wall s | tickets trained |")
    print("|---|---|---|")
    print(f"| one study of {'+'.join(methods)} | {wall:.0f} | {trained(result.rows)} |")
    for method, seconds, count in separate:
        print(f"| {method} alone | {seconds:.0f} | {count} |")
    print(f"| the {len(methods)} runs together | {total:.0f} | {sum(c for _, _, c in separate)} |")
    print(f"study / separate runs: {wall / total:.2f}")


# A cheap search's name here and the keys its run adds ("gmp_rewind": the lottery variant).
CHEAP = {"eb": ("eb", {}), "omp": ("omp", {}), "gmp": ("gmp", {"gmp_ticket": "trained"}),
         "gmp_rewind": ("gmp", {"gmp_ticket": "rewind"})}


def cheap_run(args, config, name: str, final: float, seed: int):
    """One cheap search at IMP's final sparsity, alone in its run directory
    (so its wall includes every model it needs: omp its dense one)."""
    method, keys = CHEAP[name]
    run_config = {**config, **keys, "seed": seed, "target_sparsities": [final],
                  "run_dir": f"{args.out}/{seed}/{name}"}
    if name == "eb":
        run_config.update(keys_of(args.eb))
    wall, result = timed(args.model, args.dataset, method, run_config)
    row = [r for r in result.rows if r.get("method") == method][-1]
    return wall, row


def cheap(args, config) -> None:
    from recbole_lth.views.summary import paired_difference, spread

    final = round(pruning.imp_sparsity(config["prune_rate"], args.rounds), 10)
    against = args.against.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    found = {name: {} for name in ["imp", *against]}  # name -> seed -> (metric, wall, epochs)
    print(f"{args.model} on {args.dataset}, {args.settings or 'plugin defaults'}; eb {args.eb or 'defaults'}; "
          f"IMP {args.rounds} rounds to {final:.4f}; seeds {seeds}")
    print("| seed | search | sparsity | test Recall@20 | vs IMP | wall s | wall / IMP | epochs trained |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        imp_wall, imp = timed(args.model, args.dataset, "imp", {**config, "seed": seed,
                                                                "run_dir": f"{args.out}/{seed}/imp"})
        imp_row = imp.rows[-1]
        found["imp"][seed] = (imp_row[METRIC], imp_wall)
        print(f"| {seed} | imp, {args.rounds} rounds (dense {imp.rows[0][METRIC]:.4f}) | {imp_row['sparsity']:.4f} | "
              f"{imp_row[METRIC]:.4f} | | {imp_wall:.0f} | 1 | {sum(r['epochs_trained'] for r in imp.rows)} |",
              flush=True)
        for name in against:
            wall, row = cheap_run(args, config, name, final, seed)
            found[name][seed] = (row[METRIC], wall)
            change = (row[METRIC] - imp_row[METRIC]) / imp_row[METRIC]
            search = f"{row['search_epochs']} search + " if row.get("search_epochs") is not None else ""
            print(f"| {seed} | {name} | {row['sparsity']:.4f} | {row[METRIC]:.4f} | {change:+.1%} | {wall:.0f} | "
                  f"{wall / imp_wall:.2f} | {search}{row['epochs_trained']} ticket |", flush=True)
    print()
    print(f"Over seeds {seeds} (mean ± std; Δ against IMP paired by seed, 95% CI):")
    print("| search | test Recall@20 | Δ vs IMP [95% CI] | relative | wall s | wall / IMP | "
          "target (within 2% at <= 1/5 of the wall) |")
    print("|---|---|---|---|---|---|---|")
    for name, by_seed in found.items():
        metric_mean, metric_std = spread([m for m, _ in by_seed.values()])
        wall_mean, _ = spread([w for _, w in by_seed.values()])
        ratio = fmean(by_seed[s][1] / found["imp"][s][1] for s in by_seed)
        std = f" ± {metric_std:.4f}" if metric_std is not None else ""
        if name == "imp":
            print(f"| imp | {metric_mean:.4f}{std} | | | {wall_mean:.0f} | 1 | |")
            continue
        diff = paired_difference([(by_seed[s][0], found["imp"][s][0]) for s in by_seed])
        ci = f" [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]" if diff["ci_low"] is not None else ""
        met = diff["rel_delta"] >= -0.02 and ratio <= 0.2
        print(f"| {name} | {metric_mean:.4f}{std} | {diff['delta']:+.4f}{ci} | {diff['rel_delta']:+.1%} | "
              f"{wall_mean:.0f} | {ratio:.2f} | {'met' if met else 'missed'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("study", "cheap"), default="cheap")
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default=DEFAULT_DATA)
    parser.add_argument("--methods", default="imp,omp,rp,dsl,pep,small_dense")
    parser.add_argument("--rounds", type=int, default=7, help="IMP's rounds (p = 0.2: 7 rounds = 0.7903)")
    parser.add_argument("--prune_rate", type=float, default=0.2)
    parser.add_argument("--settings", default="", help="RecBole/plugin keys for every run, 'key=value key=value'")
    parser.add_argument("--eb", default="", help="eb's keys, 'eb_epsilon=0.2 eb_window=1'")
    parser.add_argument("--against", default="eb",
                        help=f"cheap searches run beside IMP at its final sparsity, of {', '.join(CHEAP)}")
    parser.add_argument("--seeds", default="2020", help="seeds, '2020,2021,2022' (each a paired comparison)")
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder, removed)")
    args = parser.parse_args()

    keep = args.out is not None
    args.out = args.out or tempfile.mkdtemp(prefix="lth-lottery-")
    config = study_config(args, prune_rate=args.prune_rate, rounds=args.rounds, progress=False)
    try:
        (study if args.part == "study" else cheap)(args, config)
    finally:
        if not keep:
            shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
