"""Fidelity: every method at matched sparsities on one dataset and backbone, in one study.

One ``recbole_lth`` study trains the dense model once (every method's dense
reference and rewind source), IMP's rounds, and every other method at the
sparsities IMP reaches at ``--points`` (its rounds; p = 0.2: round 3 = 0.488,
round 7 = 0.7903), or at ``--targets`` without IMP (a paper's own sparsities,
``--targets 0.75,0.97,0.99``), each selected on validation and tested once at its best
epoch.  It prints the run's verdict metric (``judge.verdict_metric``: test
Recall@20 for full sort, AUC for a CTR model) by sparsity and method (the
layout of the issue that asked for it), the costs (epochs, seconds) and
writes the study's ``report.md`` and ``curve.png`` plus ``comparison.png``
into ``--out``.

    python benchmarks/bench_fidelity.py --model BPR --dataset citeulike \\
        --settings "learning_rate=0.005 eval_step=5 stopping_step=3"

With ``seeds=[...]`` (and ``workers=N``) in ``--settings`` it runs the study
once per seed and prints ``summary.md`` (mean ± std, paired CI and verdicts).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import DEFAULT_DATA, study_config  # noqa: E402

import recbole_lth  # noqa: E402
from recbole_lth import methods as registry  # noqa: E402
from recbole_lth.core import paths, pruning  # noqa: E402
from recbole_lth.engine.results import columns_of, read_settings  # noqa: E402
from recbole_lth.views.judge import metric_label, verdict_metric  # noqa: E402

METHODS = ("imp", "omp", "rp", "dsl", "pep", "small_dense")


def with_dense(methods: list[str]) -> list[str]:
    """``methods``, with ``dense`` first where none of them trains the dense
    ticket: every figure here is relative to it (``--methods pep,dsl`` alone
    would have no Δ vs dense, and no single-seed table at all)."""
    if any(registry.get(m).dense == "reference" for m in methods):
        return methods
    return ["dense"] + methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--dataset", default="citeulike")
    parser.add_argument("--data_path", default=DEFAULT_DATA)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--points", default="3,7", help="IMP rounds whose sparsities the other methods train at")
    parser.add_argument("--targets", default="",
                        help="explicit target sparsities (e.g. 0.75,0.97,0.99) instead of --points' (without imp)")
    parser.add_argument("--prune_rate", type=float, default=0.2)
    parser.add_argument("--settings", default="", help="RecBole/plugin keys, 'key=value key=value'")
    parser.add_argument("--out", default="fidelity_runs")
    args = parser.parse_args()

    points = [int(p) for p in args.points.split(",")]
    targets = [round(pruning.imp_sparsity(args.prune_rate, r), 10) for r in points]
    if args.targets:
        if "imp" in args.methods.split(","):
            parser.error("--targets: IMP's sparsities are its rounds' (--points); leave imp out")
        targets = [float(t) for t in args.targets.split(",")]
        points = [None] * len(targets)
    config = study_config(args, prune_rate=args.prune_rate, rounds=max(p or 1 for p in points),
                          target_sparsities=targets, output_root=args.out)
    methods = with_dense(args.methods.split(","))
    started = time.perf_counter()
    result = recbole_lth.run(model=args.model, dataset=args.dataset, method=methods, config_dict=config)
    wall = time.perf_counter() - started

    if result.seed_runs:  # seeds=[...]: the statistics over them
        print(f"{args.model} on {args.dataset}, {args.settings}; study {result.run_dir} ({wall:.0f} s wall)\n")
        print(paths.StudyPaths(result.run_dir).summary_md.read_text())
        return
    rows = result.rows
    dense = next(r for r in rows if r["ticket"] == "dense")
    tested = [c for c in columns_of(rows) if c.startswith("test_")]
    metric = verdict_metric(tested, read_settings(result.run_dir).get("valid_metric"))
    # A labeled task's other metrics (LogLoss beside AUC) in the ticket table.
    beside = [c for c in tested if "@" not in c + metric and c != metric]
    print(f"{args.model} on {args.dataset}, {args.settings or 'plugin defaults'}; study {result.run_dir} "
          f"({wall:.0f} s wall)")
    sparse = [m for m in methods if m != "dense"]
    columns = ["dense"] + sparse
    print("| sparsity | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    print(f"| 0 | {dense[metric]:.4f} |" + " |" * len(sparse))
    for r, target in zip(points, targets):
        cells = []
        for method in sparse:
            ticket = f"imp_round_{r:02d}" if method == "imp" else f"{method}_{target!r}"
            row = next((x for x in rows if x["ticket"] == ticket), None)
            value = row.get(metric) if row else None
            cells.append("not reached" if row and value is None else f"{value:.4f}" if value is not None else "")
        print(f"| {target:.4g} | | " + " | ".join(cells) + " |")
    print()
    heads = [metric_label(c) for c in [metric] + beside]
    print(f"| ticket | sparsity | {heads[0]} | vs dense | " + "".join(f"{h} | " for h in heads[1:])
          + "best epoch | epochs | train s | extra |")
    print("|---" * (8 + len(beside)) + "|")
    for row in rows:
        extra = {k: row[k] for k in ("dsl_updates", "dsl_frozen_epoch", "search_epochs", "search_seconds")
                 if row.get(k) is not None}
        value = row.get(metric)
        change = f"{(value - dense[metric]) / dense[metric] * 100:+.1f}%" if value is not None else ""
        others = "".join(f"{row.get(c) if row.get(c) is not None else ''} | " for c in beside)
        print(f"| {row['ticket']} | {row.get('sparsity', '')} | {value if value is not None else ''} | {change} | "
              f"{others}{row.get('best_epoch', '')} | {row.get('epochs_trained', '')} | "
              f"{row.get('train_seconds', '')} | {extra or ''} |")
    out = Path(args.out)
    shutil.copy(result.run_dir / "curve.png", out / f"comparison-{args.model}-{args.dataset}.png")
    print(f"\nreport: {result.run_dir / 'report.md'}; picture: {out / f'comparison-{args.model}-{args.dataset}.png'}")


if __name__ == "__main__":
    main()
