"""Several runs side by side: ``comparison.csv``, ``comparison.md``, ``comparison.png``.

``compare(run_dirs, out_dir)`` merges the runs' ``results.csv`` (union of
their columns, plus ``run`` = the run directory's name) and draws one curve
per (method, run) pair, each run's dense reference as a dashed line.  Each
ticket's relative change and winning verdict are against the dense
reference of *its own* run (same data split, same seed).
"""
from __future__ import annotations

from pathlib import Path

from recbole_lth import paths
from recbole_lth.judge import (
    companion_metric, dense_reference, metric_label, relative_change, verdict_cell, verdict_metric,
)
from recbole_lth.markdown import md_table, pct
from recbole_lth.plots import plot_curves
from recbole_lth.results import columns_of, read_results, read_settings


def _run_labels(run_dirs: list[Path]) -> list[str]:
    """The folder names, made unique with their parent when two collide."""
    names = [d.name for d in run_dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in run_dirs]


def compare(run_dirs, out_dir="lth_compare") -> Path:
    """Merge the runs into ``out_dir``; returns the path of ``comparison.md``."""
    run_dirs = [Path(d) for d in run_dirs]
    missing = [str(d) for d in run_dirs if not paths.RunPaths(d).results.is_file()]
    if missing:
        raise FileNotFoundError(f"no results.csv in: {', '.join(missing)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = []
    for label, run_dir in zip(_run_labels(run_dirs), run_dirs):
        rows = [{"run": label, **row} for row in read_results(run_dir)]
        runs.append((label, run_dir, rows, read_settings(run_dir)))
    merged = [row for _, _, rows, _ in runs for row in rows]
    columns = columns_of(merged)

    paths.write_csv(out_dir / "comparison.csv", merged)

    metric = verdict_metric(columns, runs[0][3].get("valid_metric"))
    ndcg = companion_metric(columns, metric)
    test_columns = [c for c in columns if c.startswith("test_")]
    lines = ["# Comparison", ""]
    lines.append(md_table(
        ["run", "model", "dataset", "method", "tickets", "dense reference"],
        [[label, rows[0].get("model") if rows else "", rows[0].get("dataset") if rows else "",
          ", ".join(dict.fromkeys(str(r.get("method")) for r in rows)), len(rows),
          (dense_reference(rows) or {}).get("ticket") or "none"] for label, _, rows, _ in runs],
    ))
    pairs = {(r.get("model"), r.get("dataset")) for r in merged}
    if len(pairs) > 1:
        lines += ["", f"Note: the runs mix models/datasets {sorted(map(str, pairs))}; compare curves within one."]
    lines += [
        "",
        f"Relative changes and the winning verdict (test {metric.removeprefix('test_') if metric else '?'} ≥ "
        "dense) are against each run's own dense reference.",
        "",
    ]
    table = []
    for label, _, rows, _ in runs:
        dense = dense_reference(rows)
        for row in rows:
            table.append(
                [label, row.get("method"), row.get("ticket"), row.get("sparsity")]
                + [row.get(c) for c in test_columns]
                + [pct(relative_change(row.get(metric), (dense or {}).get(metric))) if metric else "",
                   verdict_cell(row, dense, metric)]
            )
    lines.append(md_table(
        ["run", "method", "ticket", "sparsity"] + [c.removeprefix("test_") for c in test_columns]
        + [f"Δ {metric.removeprefix('test_') if metric else ''}", "winning"], table,
    ))

    if metric:
        series = [
            (f"{method} [{label}]", [r for r in rows if r.get("method") == method])
            for label, _, rows, _ in runs for method in dict.fromkeys(r.get("method") for r in rows)
        ]
        baselines = [(f"dense [{label}]", dense_reference(rows)) for label, _, rows, _ in runs
                     if dense_reference(rows) is not None]
        plot_curves(out_dir / "comparison.png", series, baselines, [m for m in (metric, ndcg) if m],
                    f"{metric_label(metric)} vs sparsity, {len(runs)} runs")
        lines += ["", "![comparison](comparison.png)"]
    lines.append("")
    return paths.write_text(out_dir / "comparison.md", "\n".join(lines))

