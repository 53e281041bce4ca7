"""Several runs side by side: ``comparison.csv``, ``comparison.md``, ``comparison.png``.

``compare(run_dirs, out_dir)`` merges the runs' ``results.csv`` (union of
their columns, plus ``run`` = the run directory's name) and draws one curve
per (method, run) pair, each run's dense reference as a dashed line.  Each
ticket's relative change and winning verdict are against the dense
reference of *its own* run; a run with none (rp, dsl, pep, small_dense
alone) borrows the dense row of another given run that trained the same
model on the same data (``data.json``'s fingerprint: sizes and ids of every
split) with the same RecBole settings (every key RecBole's Config defines
for the model and dataset, seed included, bar the volatile ones), or the
table says why none matched.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from recbole_lth import paths
from recbole_lth.builder import recbole_keys
from recbole_lth.judge import (
    companion_metric, dense_reference, is_empty, metric_label, relative_change, verdict_cell, verdict_metric,
)
from recbole_lth.markdown import md_table, pct
from recbole_lth.plots import plot_curves
from recbole_lth.results import columns_of, read_results, read_settings


def _run_labels(run_dirs: list[Path]) -> list[str]:
    """The folder names, made unique with their parent when two collide."""
    names = [d.name for d in run_dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in run_dirs]


# RecBole keys that do not change what a dense model computes (where it ran,
# where files go, how it logs); the plugin's own volatile keys are not RecBole's.
_VOLATILE_RECBOLE = frozenset({
    "checkpoint_dir", "data_path", "gpu_id", "use_gpu", "device", "local_rank", "state", "show_progress",
    "log_wandb", "wandb_project", "worker", "eval_batch_size", "nproc", "world_size", "ip", "port", "offset",
    "save_dataset", "save_dataloaders", "dataset_save_path", "dataloaders_save_path", "shuffle",
})
# Plugin keys that change the dense ticket's training.
_DENSE_PLUGIN_KEYS = ("fused_optimizer",)


def dense_identity(run_dir: Path) -> dict | None:
    """What a dense model trained in ``run_dir`` depends on: the model, the
    data's fingerprint and the RecBole settings; None for a run written
    before these files existed."""
    run_paths = paths.RunPaths(run_dir)
    if not (run_paths.config.is_file() and run_paths.data_fingerprint.is_file()):
        return None
    with open(run_paths.config) as f:
        config = yaml.safe_load(f) or {}
    data = {k: v for k, v in paths.read_json(run_paths.data_fingerprint).items() if k != "data_path"}
    keys = (recbole_keys(str(config.get("model")), str(config.get("dataset"))) - _VOLATILE_RECBOLE) | {
        "model", "dataset", *_DENSE_PLUGIN_KEYS}
    return {"data": data, **{k: config.get(k) for k in sorted(keys)}}


def _differences(a: dict | None, b: dict | None) -> list[str]:
    if a is None or b is None:
        return ["its config.yaml or data.json (written by an older version)"]
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    return ["the data (data.json)" if k == "data" else f"{k} ({a.get(k)!r} vs {b.get(k)!r})" for k in keys]


def borrowed_references(runs: list[tuple[str, Path, list[dict]]]) -> dict[str, tuple[dict | None, str]]:
    """Per run label: (its dense reference row, where it comes from): its own,
    a matching run's (named), or None with the reason."""
    own = {label: dense_reference(rows) for label, _, rows in runs}
    identity = {label: dense_identity(run_dir) for label, run_dir, _ in runs}
    chosen = {}
    for label, _, _ in runs:
        if own[label] is not None:
            chosen[label] = (own[label], f"own: ticket `{own[label].get('ticket')}`")
            continue
        donors = [other for other, _, _ in runs if other != label and own[other] is not None]
        match = [d for d in donors if identity[label] is not None and identity[d] == identity[label]]
        if match:
            chosen[label] = (own[match[0]], f"`{own[match[0]].get('ticket')}` of {match[0]} (same model, data, "
                                            "seed and RecBole settings)")
        elif not donors:
            chosen[label] = (None, "none: no dense row here or in another given run")
        else:
            nearest = min(donors, key=lambda d: len(_differences(identity[label], identity[d])))
            diff = _differences(identity[label], identity[nearest])
            chosen[label] = (None, f"none: the closest dense row ({nearest}) differs in "
                                   f"{', '.join(diff[:4])}{' and more' if len(diff) > 4 else ''}")
    return chosen


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
    references = borrowed_references([(label, run_dir, rows) for label, run_dir, rows, _ in runs])
    lines.append(md_table(
        ["run", "model", "dataset", "method", "tickets", "dense reference"],
        [[label, rows[0].get("model") if rows else "", rows[0].get("dataset") if rows else "",
          ", ".join(dict.fromkeys(str(r.get("method")) for r in rows)), len(rows),
          references[label][1]] for label, _, rows, _ in runs],
    ))
    pairs = {(r.get("model"), r.get("dataset")) for r in merged}
    if len(pairs) > 1:
        lines += ["", f"Note: the runs mix models/datasets {sorted(map(str, pairs))}; compare curves within one."]
    lines += [
        "",
        f"Relative changes and the winning verdict (test {metric.removeprefix('test_') if metric else '?'} ≥ "
        "dense) are against each run's dense reference: its own, else a matching run's (above); "
        "\"no reference\" where none matched.",
        "",
    ]
    table = []
    for label, _, rows, _ in runs:
        dense = references[label][0]
        for row in rows:
            missing = dense is None and not is_empty(row)
            table.append(
                [label, row.get("method"), row.get("ticket"), row.get("sparsity")]
                + [row.get(c) for c in test_columns]
                + ["no reference" if missing else pct(relative_change(row.get(metric), (dense or {}).get(metric)))
                   if metric else "", "no reference" if missing else verdict_cell(row, dense, metric)]
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

