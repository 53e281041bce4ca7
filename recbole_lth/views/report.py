"""The report of a run directory: ``report.md``, ``curve.png``, ``embedding_sizes.png``.

``write_report(run_dir)`` reads only what the run stored (``results.csv``,
``settings.json``, the tickets, ``popularity.pt`` and ``tables.json``); it
never evaluates anything, so the test set is used for nothing but the
metrics already in the results.  It works with any set of columns: methods
add columns (costs, notes, ...) and the report shows what is there.  The
verdicts are :mod:`recbole_lth.views.judge`'s; the costs are one accounting for
every row (``_COST_TEXT``).
"""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import yaml

from recbole_lth import methods
from recbole_lth.core import checkpoint, paths
from recbole_lth.deploy.export import BYTE_LAYOUTS, table_export_bytes, ticket_bytes
from recbole_lth.engine import builder
from recbole_lth.sparse import costs
from recbole_lth.views.judge import (
    at_least, companion_metric, dense_reference, is_winning, is_zero, metric_label, relative_change, verdict_cell,
    verdict_metric,
)
from recbole_lth.engine.results import columns_of, read_results, read_settings
from recbole_lth.views.markdown import fmt, md_table, pct
from recbole_lth.views.plots import plot_curves, plot_embedding_sizes
from recbole_lth.views.popularity import embedding_size_buckets, load_popularity

logger = logging.getLogger("recbole_lth")


_COST_TEXT = (
    "One accounting for every row. *Dense table* = the prunable tensors as dense fp32 "
    "(4 bytes × `prunable_params`). *Export* = what `export` writes for those tensors: a 1-bit-per-entry "
    "bitmap plus 4 bytes per kept value (`active_params`), i.e. (1−s)+1/32 of the dense table; the file adds "
    "the non-prunable parameters as they are and a few KB of metadata. *MACs relative to dense*: "
    "`recbole_lth.sparse.costs` (each multiply-accumulate of the backbone's products is attributed to the pruned "
    "tables it reads and scaled by their kept fraction; work on dense activations derived from them is not "
    "discounted; training ≈ forward ratio; inference = full-sort scoring). \"row\": the method wrote these "
    "columns itself with that accounting (e.g. DSL adds its dense-gradient steps); \"costs\": computed here "
    "from the row's per-table sparsities; \"1−s\": fallback when neither is possible (embedding MACs taken "
    "to scale with 1−s). *Epochs to best* = `best_epoch`+1 (epochs counted from 0, rewound epochs "
    "included); *wall s* = `train_seconds` (training with validation, without the test evaluation)."
)


def _train_batch_size(run_dir: Path, settings: dict) -> int:
    if settings.get("train_batch_size"):
        return int(settings["train_batch_size"])
    config_path = paths.RunPaths(run_dir).config
    if config_path.is_file():
        return int((yaml.safe_load(config_path.read_text()) or {}).get("train_batch_size") or 2048)
    return 2048


def computed_macs(run_dir: Path, rows: list[dict], settings: dict, model=None) -> tuple[list, str]:
    """``recbole_lth.sparse.costs`` MACs for the rows that carry no ``macs_*`` columns
    (aligned with ``rows``; None where not computed) and a note on why not."""
    out: list = [None] * len(rows)
    wanted = [
        i for i, r in enumerate(rows)
        if r.get("macs_train_rel") is None and r.get("macs_infer_rel") is None
        and any(c.startswith("sparsity[") and isinstance(v, (int, float)) for c, v in r.items())
    ]
    if not wanted:
        return out, ""
    try:
        model = model if model is not None else builder.rebuild(settings, run_dir)[1]
    except Exception as err:  # a report without MACs is still a report
        return out, f"the model could not be rebuilt for the MAC count ({type(err).__name__}: {err})"
    batch_size = _train_batch_size(run_dir, settings)
    for i in wanted:
        densities = {
            c[len("sparsity["):-1]: 1.0 - v for c, v in rows[i].items()
            if c.startswith("sparsity[") and isinstance(v, (int, float))
        }
        if densities:
            out[i] = costs.relative_macs(model, densities, batch_size) or None
    return out, ""


def cost_rows(rows: list[dict], macs: list | None = None) -> list[list]:
    out = []
    for row, computed in zip(rows, macs or [None] * len(rows)):
        total, active = row.get("prunable_params"), row.get("active_params")
        sparsity = row.get("sparsity")
        dense_bytes = 4 * total if isinstance(total, int) else None
        export_bytes = (
            table_export_bytes(total, active) if isinstance(total, int) and isinstance(active, int) else None
        )
        if methods.deploys(row) == "projected" and isinstance(active, int):
            export_bytes = 4 * active  # it deploys its projected tables, dense
        train_rel, infer_rel = row.get("macs_train_rel"), row.get("macs_infer_rel")
        if train_rel is not None or infer_rel is not None:
            source = "row"
        elif computed:
            source, train_rel, infer_rel = "costs", computed.get("macs_train_rel"), computed.get("macs_infer_rel")
        else:
            fallback = 1 - sparsity if isinstance(sparsity, (int, float)) else None
            source, train_rel, infer_rel = "1−s", fallback, fallback
        best = row.get("best_epoch")
        out.append([
            row.get("ticket"), row.get("method"), sparsity, row.get("nonzero_params"), dense_bytes, export_bytes,
            (export_bytes / dense_bytes) if export_bytes and dense_bytes else None,
            train_rel, infer_rel, source, (best + 1) if isinstance(best, int) else None, row.get("train_seconds"),
        ])
    return out


COST_HEADERS = [
    "ticket", "method", "sparsity", "non-zero params", "dense table bytes", "export bytes", "export/dense",
    "train MACs rel", "infer MACs rel", "MACs from", "epochs to best", "wall s",
]


_BYTES_TEXT = (
    "What each ticket's model takes in memory when served compact (`recbole_lth.core.compact`), per layout of "
    "its prunable tables, the model's other tensors (non-prunable parameters and buffers) counted once in "
    "every column. *bitmap*: 1 bit per entry (rows padded to whole bytes), an int32 offset per row and the "
    "kept values (int8: a fp16 scale and offset per row); *CSR*: a column index and a value per kept entry "
    "and int32 row pointers; *remapped*: rows without any active entry dropped behind an int32 "
    "`index_remapping` (−1 = a zero row). `lcm` counts what it deploys, its projected tables (dense). "
    "The last columns: the smallest layout, its size relative to the dense model in fp32, and the rows "
    "left without an active entry per table."
)


def bytes_section(run_dir: Path, rows: list[dict]) -> list[str]:
    run_paths = paths.RunPaths(run_dir)
    table, dense_total = [], None
    for row in rows:
        key = row.get("ticket")
        if not key or not run_paths.ticket_weights(key).is_file():
            continue
        counted = ticket_bytes(run_dir, key)
        layouts = counted["layouts"]
        if is_zero(row.get("sparsity")) and dense_total is None:
            dense_total = layouts["dense fp32"]
        reference = dense_total or layouts["dense fp32"]
        smallest = min((v, k) for k, v in layouts.items() if v is not None)
        empty = "; ".join(f"{n.removesuffix('.weight')} {e}/{t}" for n, (e, t) in counted["empty_rows"].items())
        table.append([key, row.get("sparsity")] + [layouts[k] for k in BYTE_LAYOUTS]
                     + [smallest[1], smallest[0] / reference, empty])
    if not table:
        return []
    lines = ["## Bytes of a deployed ticket", "", _BYTES_TEXT, ""]
    lines += [md_table(["ticket", "sparsity", *BYTE_LAYOUTS, "smallest", "smallest/dense", "empty rows"], table), ""]
    evaluations = [paths.read_json(p) for p in run_paths.export_evaluations()]
    if evaluations:
        lines += ["### Compact exports evaluated", "",
                  "Exports loaded compact and evaluated on the test set through RecBole's evaluator "
                  "(`export --evaluate`); Δ = change vs the ticket's own test metric.", ""]
        metrics = list(dict.fromkeys(k for e in evaluations for k in e["test"]))
        lines.append(md_table(
            ["ticket", "values", "file bytes", "resident table bytes", "resident / dense table"]
            + [f"{m} (Δ)" for m in metrics],
            [[e["ticket"], e["values"], e["file_bytes"], e["resident_table_bytes"],
              e["resident_table_bytes"] / e["dense_table_bytes"] if e.get("dense_table_bytes") else None]
             + [f"{fmt(e['test'].get(m))} ({pct(relative_change(e['test'].get(m), e['ticket_test'].get(m)))})"
                for m in metrics] for e in evaluations]))
        lines.append("")
    return lines


# ----------------------------------------------------------------- report
def _ticket_file(run_dir: Path, key) -> Path:
    return paths.RunPaths(run_dir).ticket_weights(str(key))


def default_analysis_ticket(run_dir: Path, rows: list[dict]) -> str | None:
    """The sparsest ticket whose weights are stored."""
    stored = [r for r in rows if _ticket_file(run_dir, r.get("ticket")).is_file()
              and isinstance(r.get("sparsity"), (int, float))]
    return max(stored, key=lambda r: r["sparsity"])["ticket"] if stored else None


# A verdict of one run compares two numbers of one seed (issue 35: on the quick
# start, seed 2020 called every round winning and seed 2022 every round losing).
ONE_SEED_TEXT = (
    "These verdicts are one seed's ({seed}): the seed-to-seed spread of a metric can exceed the differences "
    "between tickets. `--seeds=[2020,2021,2022]` runs the study per seed and judges each ticket by the 95% CI of "
    "its paired difference from the same seed's dense ticket (`summary.md`)."
)


def _embedding_section(run_dir: Path, rows: list[dict], ticket: str | None, buckets: int) -> list[str]:
    lines = ["## Embedding sizes vs popularity", ""]
    ticket = ticket or default_analysis_ticket(run_dir, rows)
    if ticket is None or not _ticket_file(run_dir, ticket).is_file():
        return lines + [f"No stored ticket to analyse ({ticket or 'none in this run'}).", ""]
    run_paths = paths.RunPaths(run_dir)
    stored = checkpoint.load(_ticket_file(run_dir, ticket))
    masks = stored.get("masks") or {}
    counts = load_popularity(run_dir)
    records, notes = embedding_size_buckets(masks, counts, buckets, paths.table_axes(run_dir))
    sparsity = next((r.get("sparsity") for r in rows if r.get("ticket") == ticket), None)
    lines += [
        f"Ticket `{ticket}` (sparsity {fmt(sparsity)}). Kept dimensions = entries of the row (or column) the "
        f"mask keeps. Popularity = interactions in the **training split** (`{run_paths.popularity.name}`); users and "
        f"items (padding id 0 excluded), or a CTR table's features field by field, are sorted by it and split into "
        f"{buckets} equal-size buckets, bucket 1 the least popular.",
        "",
    ]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    if not records:
        return lines + ["No user, item or feature table among the prunable tensors.", ""]
    lines.append(md_table(
        ["tensor", "side", "bucket", "training interactions", "entities", "mean kept dims", "of width", "kept fraction"],
        [[f"`{r['tensor']}`", r["side"], r["bucket"], f"{r['min_inter']}–{r['max_inter']}", r["entities"],
          f"{r['mean_kept']:.2f}", r["width"], f"{r['kept_fraction']:.3f}"] for r in records],
    ))
    plot_embedding_sizes(run_paths.embedding_sizes, records,
                         f"kept dimensions vs popularity, ticket {ticket} (sparsity {fmt(sparsity)})")
    return lines + ["", "![embedding sizes](embedding_sizes.png)", ""]


def write_report(run_dir, ticket: str | None = None, buckets: int = 5, model=None) -> Path:
    """Write ``report.md``, ``curve.png`` and ``embedding_sizes.png`` into ``run_dir``.

    ``model``: the run's RecBole model, for the MAC count (only its sizes are
    read); without it the model is rebuilt from ``settings.json`` when needed."""
    run_dir = Path(run_dir)
    run_paths = paths.RunPaths(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory (give the folder that holds results.csv)")
    rows = read_results(run_dir)
    if ticket is not None and not run_paths.ticket_weights(ticket).is_file():
        raise FileNotFoundError(f"no ticket {ticket!r} in {run_dir} (tickets: "
                                f"{', '.join(run_paths.stored_tickets()) or 'none'}); report.md was not changed")
    settings = read_settings(run_dir)
    columns = columns_of(rows)
    metric = verdict_metric(columns, settings.get("valid_metric"))
    ndcg = companion_metric(columns, metric)
    dense = dense_reference(rows)
    first = rows[0] if rows else {}
    model_name = settings.get("model", first.get("model"))
    dataset = settings.get("dataset", first.get("dataset"))
    methods = list(dict.fromkeys(r.get("method") for r in rows))

    lines = [
        f"# {model_name} on {dataset}: {', '.join(map(str, methods))}",
        "",
        f"Run directory `{run_dir}`; {len(rows)} tickets; report written {datetime.now():%Y-%m-%d %H:%M}. "
        "Every ticket was selected on the validation set; test metrics are at its best validation epoch.",
        "",
        "## Results",
        "",
    ]
    shown = [c for c in columns if c not in ("model", "dataset")]
    lines += [md_table(shown, [[r.get(c) for c in shown] for r in rows]), ""]

    lines += ["## Dense reference and winning tickets", ""]
    k_text = metric.removeprefix("test_") if metric else "(no test metric)"
    lines.append(
        f"A ticket is **winning** when its test {k_text} {at_least(metric)} the dense reference's (LTH-MRS: a′ ≥ a; "
        f"K is the valid_metric's K when that is a Recall, else the largest K in the results). The papers' second "
        f"condition, no more epochs to the best epoch than dense (j′ ≤ j), is the column `epochs ≤ dense`."
    )
    lines.append("")
    test_columns = [c for c in columns if c.startswith("test_")]
    if dense is None:
        lines += ["No dense reference in this run (no row with sparsity 0): no relative changes or verdicts.", ""]
    else:
        lines += [f"Dense reference: ticket `{dense.get('ticket')}` ({metric_label(metric)} = "
                  f"{fmt(dense.get(metric))}).", ""]
        table = []
        for row in rows:
            epochs_ok = (
                row["best_epoch"] <= dense["best_epoch"]
                if isinstance(row.get("best_epoch"), int) and isinstance(dense.get("best_epoch"), int) else None
            )
            table.append([row.get("ticket"), row.get("method"), row.get("sparsity")]
                         + [pct(relative_change(row.get(c), dense.get(c))) for c in test_columns]
                         + [verdict_cell(row, dense, metric), "" if row is dense else epochs_ok])
        lines.append(md_table(
            ["ticket", "method", "sparsity"] + [f"Δ {c.removeprefix('test_')}" for c in test_columns]
            + ["winning", "epochs ≤ dense"], table,
        ))
        winners = [r for r in rows if is_winning(r, dense, metric) and not is_zero(r.get("sparsity"))]
        lines.append("")
        if winners:
            best = max(winners, key=lambda r: r["sparsity"])
            lines.append(f"{len(winners)} sparse winning ticket(s); the sparsest is `{best['ticket']}` at "
                         f"sparsity {fmt(best['sparsity'])} ({pct(relative_change(best[metric], dense[metric]))} "
                         f"{k_text}).")
        else:
            lines.append("No sparse winning ticket in this run.")
        lines += ["", ONE_SEED_TEXT.format(seed=settings.get("seed", "RecBole's default, 2020")), ""]

    if metric:
        series = [(str(m), [r for r in rows if r.get("method") == m]) for m in methods]
        baselines = [(f"dense ({dense.get('ticket')})", dense)] if dense else []
        plot_curves(run_paths.curve, series, baselines, [m for m in (metric, ndcg) if m],
                    f"{model_name} on {dataset}: test metric vs sparsity")
        lines += ["![metric vs sparsity](curve.png)", ""]

    lines += _embedding_section(run_dir, rows, ticket, buckets)

    macs, why_not = computed_macs(run_dir, rows, settings, model)
    lines += ["## Costs", "", _COST_TEXT, ""] + ([f"MACs fall back to 1−s: {why_not}.", ""] if why_not else [])
    lines += [md_table(COST_HEADERS, cost_rows(rows, macs)), ""]
    total_seconds = sum(r["train_seconds"] for r in rows if isinstance(r.get("train_seconds"), (int, float)))
    lines += [f"Total training wall time: {total_seconds:.1f} s.", ""]
    lines += bytes_section(run_dir, rows)

    return paths.write_text(run_paths.report, "\n".join(lines))


def write_report_logged(run_dir, model=None) -> Path | None:
    """``write_report`` for the end of a run: a failure is a warning, never a lost result."""
    try:
        path = write_report(run_dir, model=model)
        logger.info(f"report: {path}")
        return path
    except Exception as err:  # the results are already on disk; the report is a view of them
        logger.warning(f"report not written for {run_dir}: {type(err).__name__}: {err}")
        return None
