"""Three-seed fidelity tables from finished seed studies (``bench_fidelity.py`` with ``seeds=[...]``).

For every ticket of the given study folders: test metric mean ± std over the
seeds, the paired Δ against the same seed's dense ticket and against the
same seed's ``--against`` ticket at the same sparsity (95% t CI, paired t
test p, the verdict the CI supports), paired across folders by seed, so a
variant studied in its own folder (other DSL keys) is compared with the main
study's OMP of the same seeds.  Dense tickets of the same seed are the same
model in every folder (the keys of a variant do not reach dense training);
the script checks that their metric agrees.

    python benchmarks/fidelity_tables.py /work/fid/lgc-all/*-seeds \\
        --extra "momentum=/work/fid/dsl-momentum/*-seeds" --against omp
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recbole_lth.engine.results import read_results  # noqa: E402
from recbole_lth.views.summary import paired_difference, spread, verdict_of  # noqa: E402


def seed_rows(study: str) -> dict[int, dict[str, dict]]:
    """{seed: {ticket: row}} of a study folder."""
    out = {}
    for folder in sorted(glob.glob(os.path.join(study, "seed_*"))):
        seed = int(folder.rsplit("_", 1)[1])
        out[seed] = {row["ticket"]: row for row in read_results(folder)}
    return out


def target_of(row: dict) -> str:
    """The sparsity a ticket was trained at, to 3 decimals (IMP's rounds and the targets alike)."""
    return f"{float(row.get('target_sparsity') or row.get('sparsity') or 0):.3f}"


def compare(values: dict[int, float], reference: dict[int, float]) -> str:
    pairs = [(values[s], reference[s]) for s in values if s in reference]
    if len(pairs) < 2:
        return ""
    d = paired_difference(pairs)
    p = f", p = {d['p']:.3f}" if d["p"] is not None else ""
    return (f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]{p} "
            f"({d['rel_delta'] * 100:+.1f}%, {verdict_of(d['ci_low'], d['ci_high'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the main study folder (…-seeds)")
    parser.add_argument("--extra", action="append", default=[], help="LABEL=STUDY: a variant's study folder")
    parser.add_argument("--against", default="omp", help="the method every ticket is also paired with")
    parser.add_argument("--metric", default="test_recall@20")
    args = parser.parse_args()
    metric = args.metric

    main_rows = seed_rows(glob.glob(args.study)[0])
    dense = {s: rows["dense"][metric] for s, rows in main_rows.items() if "dense" in rows}
    against = {}  # target -> {seed: value}
    tickets = []  # (label, target, {seed: value})
    for seed, rows in main_rows.items():
        for ticket, row in rows.items():
            if row.get(metric) is None:
                continue
            if row.get("method") == args.against:
                against.setdefault(target_of(row), {})[seed] = row[metric]
    order = {}
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
    values: dict[str, dict[int, float]] = {}
    for name, seed, value in tickets:
        values.setdefault(name, {})[seed] = value
    print(f"| ticket | sparsity | {metric} mean ± std | Δ vs dense (95% CI), p | Δ vs {args.against} (95% CI), p |")
    print("|---|---|---|---|---|")
    for name, (method, target) in order.items():
        by_seed = values.get(name, {})
        mean, std = spread(list(by_seed.values()))
        cell = f"{mean:.4f} ± {std:.4f}" if std is not None else (f"{mean:.4f}" if mean is not None else "not reached")
        seeds = "" if len(by_seed) == len(dense) else f" ({len(by_seed)} seeds)"
        versus_dense = compare(by_seed, dense) if name != "dense" else "reference"
        versus = compare(by_seed, against.get(target, {})) if method != args.against and name != "dense" else ""
        print(f"| {name} | {target} | {cell}{seeds} | {versus_dense} | {versus} |")


if __name__ == "__main__":
    main()
