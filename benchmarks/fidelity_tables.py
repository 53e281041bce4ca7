"""Three-seed fidelity tables from finished seed studies (``bench_fidelity.py`` with ``seeds=[...]``).

For every ticket of the given study folders: test metric mean ± std over the
seeds, the paired Δ against the same seed's dense ticket and against the
same seed's ``--against`` ticket at the same sparsity (95% t CI, paired t
test p, the verdict the CI supports), paired across folders by seed, so a
variant studied in its own folder (other DSL keys) is compared with the main
study's OMP of the same seeds.  Dense tickets of the same seed are the same
model in every folder (the keys of a variant do not reach dense training);
the script checks that their metric agrees.  The metric is the run's verdict
metric (``judge.verdict_metric``: Recall@K for full sort, AUC for a CTR model,
whose LogLoss gets a table of its own), or ``--metric``; verdicts read it in
its direction (a LogLoss wins below the reference).  ``--epoch_cost`` adds each
ticket's seconds per epoch (``train_seconds / epochs_trained``) over the main
study's dense ticket's of the same seed, mean ± std over the seeds.

    python benchmarks/fidelity_tables.py /work/fid/lgc-all/*-seeds \\
        --extra "momentum=/work/fid/dsl-momentum/*-seeds" --against omp
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recbole_lth.engine.results import columns_of, read_results, read_settings  # noqa: E402
from recbole_lth.views.judge import verdict_metric  # noqa: E402
from recbole_lth.views.summary import paired_difference, spread, verdict_of  # noqa: E402


_NOTED: set[str] = set()  # seed folders already reported as unfinished


def seed_rows(study: str) -> dict[int, dict[str, dict]]:
    """{seed: {ticket: row}} of a study folder."""
    out = {}
    for folder in sorted(glob.glob(os.path.join(study, "seed_*"))):
        seed = int(folder.rsplit("_", 1)[1])
        if not os.path.isfile(os.path.join(folder, "results.csv")):  # a study stopped before this seed
            if folder not in _NOTED:
                _NOTED.add(folder)
                print(f"note: seed {seed} has no finished ticket yet ({folder}); left out", file=sys.stderr)
            continue
        out[seed] = {row["ticket"]: row for row in read_results(folder)}
    return out


def target_of(row: dict) -> str:
    """The sparsity a ticket was trained at, to 3 decimals (IMP's rounds and the targets alike)."""
    return f"{float(row.get('target_sparsity') or row.get('sparsity') or 0):.3f}"


def compare(values: dict[int, float], reference: dict[int, float], metric: str) -> str:
    pairs = [(values[s], reference[s]) for s in values if s in reference]
    if len(pairs) == 1:  # one seed: the difference, with no interval to judge it by
        (value, ref), = pairs
        return f"{value - ref:+.4f} ({(value - ref) / ref * 100:+.1f}%, one seed: no CI)"
    if len(pairs) < 2:
        return ""
    d = paired_difference(pairs)
    p = f", p = {d['p']:.3f}" if d["p"] is not None else ""
    return (f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]{p} "
            f"({d['rel_delta'] * 100:+.1f}%, {verdict_of(d['ci_low'], d['ci_high'], metric)})")


def epoch_cost(row: dict) -> float | None:
    """Seconds per trained epoch (``train_seconds / epochs_trained``)."""
    seconds, epochs = row.get("train_seconds"), row.get("epochs_trained")
    return seconds / epochs if seconds is not None and epochs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the main study folder (…-seeds)")
    parser.add_argument("--extra", action="append", default=[], help="LABEL=STUDY: a variant's study folder")
    parser.add_argument("--against", default="omp",
                        help="the method(s) every ticket is also paired with, at its sparsity (comma-separated: "
                             "omp,small_dense adds a column each)")
    parser.add_argument("--metric", default=None,
                        help="test column (default: the run's verdict metric, and a labeled task's other metrics)")
    parser.add_argument("--versus", default=None,
                        help="LABEL=STUDY: the same tickets trained otherwise (another learner); a table of each "
                             "ticket in both, Δ paired by seed, and their seconds per epoch")
    parser.add_argument("--epoch_cost", action="store_true",
                        help="add each ticket's seconds per epoch over its seed's dense ticket's (mean ± std)")
    args = parser.parse_args()

    main_rows = seed_rows(glob.glob(args.study)[0])
    if args.metric:
        metrics = [args.metric]
    else:
        tested = [c for c in columns_of([r for rows in main_rows.values() for r in rows.values()])
                  if c.startswith("test_")]
        first = sorted(glob.glob(os.path.join(glob.glob(args.study)[0], "seed_*")))[0]
        metric = verdict_metric(tested, read_settings(first).get("valid_metric"))
        metrics = [metric] + [c for c in tested if "@" not in c + metric and c != metric]  # LogLoss beside AUC
    for i, metric in enumerate(metrics):
        if i:
            print()
        if args.versus:
            versus_table(main_rows, *args.versus.split("=", 1), metric)
        else:
            table(args, main_rows, metric, args.epoch_cost and not i)


def versus_table(main_rows: dict[int, dict[str, dict]], label: str, study: str, metric: str) -> None:
    """Each ticket of the main study beside the same ticket of ``study`` (same seeds): Δ = ``label`` − main."""
    other = seed_rows(glob.glob(study)[0])
    print(f"| ticket | sparsity | {metric}: main | {metric}: {label} | Δ {label} − main (95% CI), p "
          f"| s/epoch: main | s/epoch: {label} |")
    print("|---" * 7 + "|")
    names = list(dict.fromkeys(t for rows in main_rows.values() for t in rows))
    for name in names:
        mine = {s: rows[name] for s, rows in main_rows.items() if name in rows and rows[name].get(metric) is not None}
        theirs = {s: rows[name] for s, rows in other.items() if name in rows and rows[name].get(metric) is not None}
        cells = []
        for rows in (mine, theirs):
            mean, std = spread([r[metric] for r in rows.values()])
            cells.append(f"{mean:.4f} ± {std:.4f}" if std is not None else (f"{mean:.4f}" if mean is not None else ""))
        delta = compare({s: r[metric] for s, r in theirs.items()}, {s: r[metric] for s, r in mine.items()}, metric)
        cost = []
        for rows in (mine, theirs):
            mean, std = spread([c for c in map(epoch_cost, rows.values()) if c is not None])
            cost.append(f"{mean:.2f} ± {std:.2f}" if std is not None else (f"{mean:.2f}" if mean is not None else ""))
        target = target_of(next(iter(mine.values()))) if mine else ""
        print(f"| {name} | {target} | {cells[0]} | {cells[1]} | {delta} | {cost[0]} | {cost[1]} |")


def table(args, main_rows: dict[int, dict[str, dict]], metric: str, with_cost: bool) -> None:
    dense = {s: rows["dense"][metric] for s, rows in main_rows.items() if "dense" in rows}
    references = args.against.split(",")
    against = {name: {} for name in references}  # method -> target -> {seed: value}
    tickets = []  # (label, target, {seed: value})
    for seed, rows in main_rows.items():
        for ticket, row in rows.items():
            if row.get(metric) is not None and row.get("method") in against:
                against[row["method"]].setdefault(target_of(row), {})[seed] = row[metric]
    dense_cost = {s: epoch_cost(rows["dense"]) for s, rows in main_rows.items() if "dense" in rows}
    order = {}
    costs: dict[str, list[float]] = {}  # name -> per seed, its seconds per epoch over the dense ticket's
    for label, study in [("", args.study)] + [tuple(e.split("=", 1)) for e in args.extra]:
        rows_by_seed = seed_rows(glob.glob(study)[0])
        for seed, rows in rows_by_seed.items():
            if "dense" in rows and seed in dense and abs(rows["dense"][metric] - dense[seed]) > 1e-9:
                print(f"warning: {label}'s dense ticket of seed {seed} differs from the main study's", file=sys.stderr)
            for ticket, row in rows.items():
                if ticket == "dense" and label:
                    continue
                name = f"{ticket} [{label}]" if label else ticket
                key = order.setdefault(name, (row.get("method"), target_of(row)))
                if row.get(metric) is not None:
                    tickets.append((name, seed, row[metric]))
                if epoch_cost(row) is not None and dense_cost.get(seed):
                    costs.setdefault(name, []).append(epoch_cost(row) / dense_cost[seed])
    values: dict[str, dict[int, float]] = {}
    for name, seed, value in tickets:
        values.setdefault(name, {})[seed] = value
    head = f"| ticket | sparsity | {metric} mean ± std | Δ vs dense (95% CI), p |" + "".join(
        f" Δ vs {name} (95% CI), p |" for name in references)
    print(head + (" epoch cost ÷ dense's |" if with_cost else ""))
    print("|---" * (head.count("|") - 1 + with_cost) + "|")
    for name, (method, target) in order.items():
        by_seed = values.get(name, {})
        mean, std = spread(list(by_seed.values()))
        cell = f"{mean:.4f} ± {std:.4f}" if std is not None else (f"{mean:.4f}" if mean is not None else "not reached")
        seeds = "" if len(by_seed) == len(dense) else f" ({len(by_seed)} seeds)"
        versus_dense = compare(by_seed, dense, metric) if name != "dense" else "reference"
        versus = " | ".join(compare(by_seed, against[ref].get(target, {}), metric)
                            if method != ref and name != "dense" else "" for ref in references)
        mean_cost, std_cost = spread(costs.get(name, []))
        cost = "" if not with_cost else (f" {mean_cost:.2f}" if mean_cost is not None else "") + (
            f" ± {std_cost:.2f}" if std_cost is not None else "") + " |"
        print(f"| {name} | {target} | {cell}{seeds} | {versus_dense} | {versus} |{cost}")


if __name__ == "__main__":
    main()
