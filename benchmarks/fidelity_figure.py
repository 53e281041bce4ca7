"""The PEP paper's figure from finished seed studies: the test metric against the non-zero weights.

One panel per metric (a CTR study's AUC and LogLoss; a full-sort study's
Recall@K), a log axis of the prunable tables' non-zero weights, one line per
method with its mean's 95% t interval over the seeds as error bars
(``views.summary.frontier_points``: the same figure every study writes as
``frontier.png``), the dense model as a dashed line with its band.  Beside
the main study: ``--extra`` studies' methods as more lines (a variant run in
its own folder), ``--line LABEL=STUDY`` a study's dense model as a reference
line (RecBole's ``LR``: the model without embeddings), ``--line LABEL=VALUE``
and ``--point LABEL=WEIGHTS:VALUE`` a paper's figures on the first panel.
It prints the drawn points as a table.

    python benchmarks/fidelity_figure.py "fid-ml1m/FM-ml-1m-pep-*-seeds" \\
        --line "LR=fid-lr/LR-ml-1m-pep-*-seeds" --line "LR (paper)=0.7717" \\
        --point "PEP-0 (paper)=6541:0.8368" --out fm-frontier.png
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fidelity_tables import seed_rows  # noqa: E402

from recbole_lth.engine.results import read_settings  # noqa: E402
from recbole_lth.views.judge import metric_label  # noqa: E402
from recbole_lth.views.plots import plot_frontier  # noqa: E402
from recbole_lth.views.summary import frontier_metrics, frontier_points, summarize  # noqa: E402


def study_rows(pattern: str) -> list[dict]:
    """The summary rows (mean, std, n per ticket) of the one study folder ``pattern`` names."""
    found = sorted(glob.glob(pattern))
    if len(found) != 1:
        sys.exit(f"{pattern}: names {len(found)} study folders; name one")
    by_seed = {seed: list(rows.values()) for seed, rows in seed_rows(found[0]).items()}
    if not by_seed:
        sys.exit(f"{found[0]}: no seed has a finished ticket")
    first = sorted(glob.glob(os.path.join(found[0], "seed_*")))[0]
    return summarize(by_seed, read_settings(first).get("valid_metric"))


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def reference_line(label: str, spec: str, metric: str, first: bool) -> tuple | None:
    """(label, None, mean, low, high) of a study's dense model, or of a number (first panel only)."""
    value = number(spec)
    if value is not None:
        return (label, None, value, value, value) if first else None
    _, reference = frontier_points(study_rows(spec), metric)
    return (label, None, *reference[2:]) if reference else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the main study folder (…-seeds; a glob naming one folder)")
    parser.add_argument("--extra", action="append", default=[], help="LABEL=STUDY: more methods' lines")
    parser.add_argument("--line", action="append", default=[],
                        help="LABEL=STUDY (its dense model) or LABEL=VALUE (first panel): a reference line")
    parser.add_argument("--point", action="append", default=[], help="LABEL=WEIGHTS:VALUE: a marker, first panel")
    parser.add_argument("--title", default=None)
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()

    rows = study_rows(args.study)
    extras = [(label, study_rows(study)) for label, study in (e.split("=", 1) for e in args.extra)]
    panels = []
    for i, metric in enumerate(frontier_metrics(rows)):
        lines, reference = frontier_points(rows, metric)
        for label, extra in extras:
            lines += [(f"{method} [{label}]", points) for method, points in frontier_points(extra, metric)[0]]
        references = ([reference] if reference else []) + [
            r for r in (reference_line(*line.split("=", 1), metric, not i) for line in args.line) if r]
        points = [] if i else [(label, *map(float, spec.split(":"))) for label, spec in
                               (p.split("=", 1) for p in args.point)]
        panels.append((metric, lines, references, points))
    if not panels:
        sys.exit(f"{args.study}: no test metric to draw")
    plot_frontier(args.out, panels, args.title or os.path.basename(sorted(glob.glob(args.study))[0]))
    print_points(panels)
    print(f"\nfigure: {args.out}")


def print_points(panels: list[tuple]) -> None:
    for metric, lines, references, _ in panels:
        print(f"\n| line | non-zero weights | {metric_label(metric)} mean | 95% interval |")
        print("|---|---|---|---|")
        for label, weights, mean, low, high in references:
            print(f"| {label} | {'' if weights is None else f'{weights:,.0f}'} | {mean:.4f} | "
                  f"[{low:.4f}, {high:.4f}] |")
        for label, points in lines:
            for weights, mean, low, high in points:
                print(f"| {label} | {weights:,.0f} | {mean:.4f} | [{low:.4f}, {high:.4f}] |")


if __name__ == "__main__":
    main()
