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

Runs whose ``settings.json`` differ only in ``seed`` (volatile keys aside)
form a *seed group* when they hold at least two distinct seeds: each group
gets the statistics over its seeds (:mod:`recbole_lth.views.summary`) in the
section "Seed groups" and its rows in ``comparison_summary.csv``.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from recbole_lth.core import paths
from recbole_lth.engine.builder import recbole_keys
from recbole_lth.views.judge import (
    at_least, companion_metric, dense_reference, is_empty, metric_label, relative_change, verdict_cell, verdict_metric,
)
from recbole_lth.core.settings import VOLATILE_KEYS
from recbole_lth.engine.results import columns_of, read_results, read_settings
from recbole_lth.views.markdown import md_table, pct
from recbole_lth.views.plots import plot_curves
from recbole_lth.views.summary import summarize, verdict_table


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
_DENSE_PLUGIN_KEYS = ("fused_optimizer", "fast_propagation")


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


def run_seed(run_dir: Path, settings: dict):
    """The run's seed: its settings', else the one RecBole resolved (config.yaml)."""
    if settings.get("seed") is not None:
        return settings["seed"]
    config_path = paths.RunPaths(run_dir).config
    return (yaml.safe_load(config_path.read_text()) or {}).get("seed") if config_path.is_file() else None


# What may differ between the runs of a seed group (VOLATILE_KEYS holds
# run_dir and output_root: every run has its own).
_SEED_GROUP_FREE = VOLATILE_KEYS | {"seed"}


def seed_groups(runs: list[tuple[str, Path, dict]]) -> list[list[tuple[str, int]]]:
    """[(label, seed)] per group of runs whose settings differ only in the seed,
    with at least two distinct seeds; a seed already in the group is left out
    (its run would overwrite the first one's statistics)."""
    groups: dict[str, dict] = {}
    for label, run_dir, settings in runs:
        seed = run_seed(run_dir, settings)
        if not settings or seed is None:
            continue  # nothing to tell what the run computed
        key = json.dumps({k: v for k, v in settings.items() if k not in _SEED_GROUP_FREE}, sort_keys=True,
                         default=str)
        groups.setdefault(key, {}).setdefault(seed, label)
    return [[(label, seed) for seed, label in members.items()] for members in groups.values() if len(members) >= 2]


def seed_group_section(runs, out_dir: Path) -> list[str]:
    """The "Seed groups" section of comparison.md, and comparison_summary.csv."""
    summary_csv = out_dir / "comparison_summary.csv"
    by_label = {label: (rows, settings) for label, _, rows, settings in runs}
    groups = seed_groups([(label, run_dir, settings) for label, run_dir, _, settings in runs])
    if not groups:
        summary_csv.unlink(missing_ok=True)  # an earlier comparison's groups are not these runs'
        return []
    lines = ["", "## Seed groups", "",
             "Runs whose settings differ only in the seed, summarised over their seeds (paired Δ against each "
             "seed's own dense reference; see `comparison_summary.csv`)."]
    merged = []
    for number, members in enumerate(groups, start=1):
        seed_rows = {seed: by_label[label][0] for label, seed in members}
        rows = summarize(seed_rows, by_label[members[0][0]][1].get("valid_metric"))
        merged += [{"group": number, **row} for row in rows]
        lines += ["", f"### Group {number}", "", md_table(["run", "seed"], [[label, seed] for label, seed in members]),
                  "", verdict_table(rows)]
    paths.write_csv(summary_csv, merged)
    return lines


def compare(run_dirs, out_dir="lth_compare") -> Path:
    """Merge the runs into ``out_dir``; returns the path of ``comparison.md``."""
    unique, seen = [], set()
    for run_dir in map(Path, run_dirs):  # a run given twice is compared once
        if run_dir.resolve() not in seen:
            seen.add(run_dir.resolve())
            unique.append(run_dir)
    run_dirs = unique
    missing = [str(d) for d in run_dirs if not paths.RunPaths(d).results.is_file()]
    if missing:
        raise FileNotFoundError(f"no results.csv in: {', '.join(missing)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out={out_dir}: allowed values are a folder to write comparison.md into, not a file")
    runs = []  # every run is read (and a damaged one refused) before anything is written
    for label, run_dir in zip(_run_labels(run_dirs), run_dirs):
        rows = [{"run": label, **row} for row in read_results(run_dir)]
        runs.append((label, run_dir, rows, read_settings(run_dir)))
    out_dir.mkdir(parents=True, exist_ok=True)
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
        f"Relative changes and the winning verdict (test {metric.removeprefix('test_') if metric else '?'} "
        f"{at_least(metric)} "
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
    lines += seed_group_section(runs, out_dir)
    lines.append("")
    return paths.write_text(out_dir / "comparison.md", "\n".join(lines))

