"""What a lottery-ticket comparison costs: one study against separate runs, early-bird against IMP.

Two measurements, each side by side in this one process (same settings,
same data, run one after the other on a quiet machine):

* ``--part study``: the wall time of one study of ``--methods`` (one run
  directory, one dense model shared) against one run per method (each
  trains what it needs itself: imp and omp their own dense model), and
  the tickets each trained.
* ``--part cheap``: IMP to round ``--rounds`` against ``eb`` (early-bird
  tickets on IMP's grid) at exactly IMP's final sparsity, with both tickets'
  test Recall@20, the ratio of wall times and eb's search cost.

    python benchmarks/bench_lottery.py --part cheap --dataset ml-1m \\
        --settings "learning_rate=0.005 eval_step=5 stopping_step=3"
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import DEFAULT_DATA  # noqa: E402

import recbole_lth  # noqa: E402
from recbole_lth.core import pruning  # noqa: E402
from recbole_lth.core.settings import parse_value  # noqa: E402

BENCHMARK_SPLITS = ("yelp2018", "lastfm", "citeulike")
METRIC = "test_recall@20"


def timed(model, dataset, method, config):
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


def cheap(args, config) -> None:
    final = round(pruning.imp_sparsity(config["prune_rate"], args.rounds), 10)
    imp_wall, imp = timed(args.model, args.dataset, "imp", {**config, "run_dir": f"{args.out}/imp"})
    eb_config = {**config, "target_sparsities": [final], "run_dir": f"{args.out}/eb"}
    for pair in args.eb.split():
        key, value = pair.split("=", 1)
        eb_config[key] = parse_value(value)
    eb_wall, eb = timed(args.model, args.dataset, "eb", eb_config)
    imp_row = imp.rows[-1]
    eb_row = eb.rows[-1]
    dense = imp.rows[0]
    print(f"{args.model} on {args.dataset}, {args.settings or 'plugin defaults'}; eb {args.eb or 'defaults'}")
    print("| search | final sparsity | test Recall@20 | vs IMP | wall s | wall / IMP | epochs trained |")
    print("|---|---|---|---|---|---|---|")
    imp_epochs = sum(r["epochs_trained"] for r in imp.rows)
    print(f"| imp, {args.rounds} rounds | {imp_row['sparsity']:.4f} | {imp_row[METRIC]:.4f} | | {imp_wall:.0f} | 1 | "
          f"{imp_epochs} |")
    change = (eb_row[METRIC] - imp_row[METRIC]) / imp_row[METRIC]
    print(f"| eb | {eb_row['sparsity']:.4f} | {eb_row[METRIC]:.4f} | {change:+.1%} | {eb_wall:.0f} | "
          f"{eb_wall / imp_wall:.2f} | {eb_row['search_epochs']} search + {eb_row['epochs_trained']} ticket |")
    print(f"dense: test Recall@20 {dense[METRIC]:.4f}; eb's search {eb_row['search_seconds']:.0f} s; "
          f"target: eb within 2% of IMP at <= 1/3 of its wall time: "
          f"{'met' if change >= -0.02 and eb_wall <= imp_wall / 3 else 'missed'}")


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
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder, removed)")
    args = parser.parse_args()

    keep = args.out is not None
    args.out = args.out or tempfile.mkdtemp(prefix="lth-lottery-")
    config = {"data_path": args.data_path, "prune_rate": args.prune_rate, "rounds": args.rounds,
              "state": "WARNING", "show_progress": False, "progress": False}
    if args.dataset in BENCHMARK_SPLITS:
        config["benchmark_filename"] = ["train", "valid", "test"]
    for pair in args.settings.split():
        key, value = pair.split("=", 1)
        config[key] = parse_value(value)
    try:
        (study if args.part == "study" else cheap)(args, config)
    finally:
        if not keep:
            shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
