"""The report of a run directory: ``report.md``, ``curve.png``, ``embedding_sizes.png``.

``write_report(run_dir)`` reads only what the run stored (``results.csv``,
``settings.json``, the tickets and ``popularity.pt``); it never evaluates
anything, so the test set is used for nothing but the metrics already in the
results.  It works with any set of columns: methods add columns (costs,
notes, ...) and the report shows what is there.

* The dense reference is the row with sparsity 0 (ticket ``dense`` or
  ``round_00`` first).
* A ticket is *winning* when its test Recall@K is at least the dense
  reference's (LTH-MRS, a' >= a), with K the ``valid_metric``'s K when that
  is a Recall, else the largest K in the columns.  The papers' second
  condition (no more epochs than dense, j' <= j) is shown beside it.
* Embedding sizes: for one ticket (default: the sparsest), kept dimensions
  of every user and item row against its number of training interactions,
  in equal-size popularity buckets (the DSL paper's Fig. 4 grouping).
* Costs, one accounting for every row: see ``_COST_TEXT``.
"""
from __future__ import annotations

import csv
import logging
import math
from datetime import datetime
from pathlib import Path

import torch

from recbole_lth import checkpoint
from recbole_lth.export import table_export_bytes

logger = logging.getLogger("recbole_lth")

DENSE_TICKETS = ("dense", "round_00")
POPULARITY_FILE = "popularity.pt"


# ------------------------------------------------------------------ results
def _value(text):
    if text is None or text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def read_results(run_dir) -> list[dict]:
    """Rows of ``results.csv`` with numbers parsed (empty cells are None)."""
    with open(Path(run_dir) / "results.csv", newline="") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_settings(run_dir) -> dict:
    path = Path(run_dir) / "settings.json"
    return checkpoint.read_json(path) if path.is_file() else {}


def columns_of(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns


def _is_zero(value) -> bool:
    return isinstance(value, (int, float)) and abs(value) < 1e-12


def dense_reference(rows: list[dict]) -> dict | None:
    """The row with sparsity 0, preferring tickets ``dense``/``round_00``."""
    dense = [r for r in rows if _is_zero(r.get("sparsity"))]
    named = [r for r in dense if r.get("ticket") in DENSE_TICKETS]
    return (named or dense or [None])[0]


def verdict_metric(columns, valid_metric: str | None) -> str | None:
    """``test_recall@K``: K of the valid_metric when it is a Recall, else the largest K."""
    wanted = f"test_{str(valid_metric or '').lower()}"
    if wanted.startswith("test_recall@") and wanted in columns:
        return wanted
    recalls = [c for c in columns if c.startswith("test_recall@")]
    if recalls:
        return max(recalls, key=lambda c: int(c.split("@")[1]) if c.split("@")[1].isdigit() else -1)
    if wanted in columns:
        return wanted
    tests = [c for c in columns if c.startswith("test_")]
    return tests[0] if tests else None


def companion_metric(columns, metric: str | None) -> str | None:
    """The NDCG at the verdict metric's K, for the curve's second panel."""
    if metric and "@" in metric:
        ndcg = f"test_ndcg@{metric.split('@')[1]}"
        if ndcg in columns and ndcg != metric:
            return ndcg
    return None


def metric_label(column: str) -> str:
    name = column.removeprefix("test_")
    known = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "hit": "Hit", "precision": "Precision"}
    base, _, k = name.partition("@")
    return f"test {known.get(base, base)}{'@' + k if k else ''}"


def relative_change(value, reference) -> float | None:
    if not isinstance(value, (int, float)) or not isinstance(reference, (int, float)) or reference == 0:
        return None
    return (value - reference) / reference


def is_winning(row: dict, dense: dict | None, metric: str | None) -> bool | None:
    if dense is None or metric is None or row.get(metric) is None or dense.get(metric) is None:
        return None
    return row[metric] >= dense[metric]


# --------------------------------------------------------------- markdown
def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def pct(value) -> str:
    return "" if value is None else f"{value * 100:+.1f}%"


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------- curves
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, axes, title: str, path) -> Path:
    """Grid and legend on every panel, a title, and a PNG written to ``path``."""
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_curves(path, series: list[tuple], baselines: list[tuple], metrics: list[str], title: str) -> Path:
    """Test metric vs sparsity: ``series`` = [(label, rows)], ``baselines`` = [(label, row)]
    drawn as horizontal dashed lines; one panel per metric."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics), 4.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 8)
        for label, rows in series:
            points = sorted(
                (r["sparsity"], r[metric]) for r in rows
                if isinstance(r.get("sparsity"), (int, float)) and isinstance(r.get(metric), (int, float))
            )
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label, color=next(colors))
        for i, (label, row) in enumerate(baselines):
            if isinstance(row.get(metric), (int, float)):
                ax.axhline(row[metric], linestyle="--", color=("0.35", "0.6", "0.15", "0.75")[i % 4],
                           linewidth=1.2, label=label)
        ax.set_xlabel("sparsity of the prunable tables (fraction of weights pruned)")
        ax.set_ylabel(metric_label(metric))
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
    return _save_figure(plt, fig, axes, title, path)


# ------------------------------------------------------------- popularity
def interaction_counts(train_dataset) -> dict[str, torch.Tensor]:
    """Training interactions per user id and per item id (index = RecBole's id,
    i.e. the row of the embedding table; id 0 is RecBole's padding)."""
    inter = train_dataset.inter_feat
    users = torch.as_tensor(inter[train_dataset.uid_field]).long()
    items = torch.as_tensor(inter[train_dataset.iid_field]).long()
    return {
        "user": torch.bincount(users, minlength=train_dataset.user_num),
        "item": torch.bincount(items, minlength=train_dataset.item_num),
    }


def save_popularity(run_dir, train_dataset) -> None:
    """Store the training split's counts once (``prepare`` calls this): the report
    then needs no dataset and never sees the valid/test interactions."""
    path = Path(run_dir) / POPULARITY_FILE
    if not path.exists():
        checkpoint.save(path, state_dict=interaction_counts(train_dataset), meta={"source": "training split"})


def rebuild(run_dir) -> tuple:
    """``(train_dataset, model)`` rebuilt from ``settings.json`` (same seed, same
    split), for a run directory whose report needs what the run did not store
    (``popularity.pt`` of runs written before it existed; the model's sizes for
    the MACs).  Never downloads: the dataset must be found as in a run."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    from recbole_lth.api import _argv_isolated
    from recbole_lth.config import resolve_data_path

    settings = read_settings(run_dir)
    settings["data_path"] = resolve_data_path(settings)
    recbole_dict = {k: v for k, v in settings.items() if k not in ("model", "dataset", "config_files")}
    recbole_dict.update(checkpoint_dir=str(run_dir), state="WARNING", show_progress=False)
    with _argv_isolated():
        config = Config(model=settings["model"], dataset=settings["dataset"], config_dict=recbole_dict)
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data.dataset)
    return train_data.dataset, model


def load_popularity(run_dir) -> dict:
    path = Path(run_dir) / POPULARITY_FILE
    if not path.is_file():
        save_popularity(run_dir, rebuild(run_dir)[0])
    return checkpoint.load(path)["state_dict"]


# -------------------------------------------------------- embedding sizes
def entity_axis(name: str, shape, counts: dict) -> tuple[str, int] | None:
    """Which side (user/item) a tensor's rows (axis 0) or columns (axis 1) index.

    Embeddings and output layers have one row per entity; an input Linear
    (MultiVAE ``encoder.0``, CDAE ``h_item``) has one *column* per item."""
    if len(shape) != 2:
        return None
    matches = [(side, axis) for axis in (0, 1) for side in ("user", "item") if shape[axis] == counts[side].numel()]
    named = [m for m in matches if m[0] in name.lower()]
    return (named or matches or [None])[0]


def embedding_size_buckets(masks: dict, counts: dict, buckets: int = 5) -> tuple[list[dict], list[str]]:
    """Per tensor and popularity bucket: entities, interaction range, mean kept dims.

    Entities (padding id 0 excluded) are sorted by training interactions and
    split into ``buckets`` groups of equal size; bucket 1 is the least popular."""
    records, notes = [], []
    for name, mask in masks.items():
        where = entity_axis(name, tuple(mask.shape), counts)
        if where is None:
            notes.append(f"`{name}` {tuple(mask.shape)}: neither side is the user or item count, skipped")
            continue
        side, axis = where
        kept = mask.sum(dim=1 - axis)[1:]  # kept dimensions per entity, padding row dropped
        width = mask.shape[1 - axis]
        popularity = counts[side][1:]
        if axis == 1:
            notes.append(f"`{name}` {tuple(mask.shape)}: column j is {side} j (an input layer over {side}s)")
        elif "embedding" not in name.lower():
            notes.append(f"`{name}` {tuple(mask.shape)}: row j is {side} j")
        order = torch.argsort(popularity, stable=True)
        for b, chunk in enumerate(torch.tensor_split(order, min(buckets, order.numel())), start=1):
            records.append({
                "tensor": name, "side": side, "bucket": b, "width": width,
                "entities": chunk.numel(),
                "min_inter": int(popularity[chunk].min()), "max_inter": int(popularity[chunk].max()),
                "mean_kept": float(kept[chunk].float().mean()),
                "kept_fraction": float(kept[chunk].float().mean()) / width,
            })
    return records, notes


def plot_embedding_sizes(path, records: list[dict], title: str) -> Path:
    plt = _pyplot()
    sides = [s for s in ("user", "item") if any(r["side"] == s for r in records)] or ["item"]
    fig, axes = plt.subplots(1, len(sides), figsize=(6.2 * len(sides), 4.4), squeeze=False)
    for ax, side in zip(axes[0], sides):
        for name in dict.fromkeys(r["tensor"] for r in records if r["side"] == side):
            mine = [r for r in records if r["tensor"] == name]
            ax.plot([r["bucket"] for r in mine], [r["kept_fraction"] for r in mine], marker="o",
                    label=f"{name} (width {mine[0]['width']})")
        ax.set_xticks(sorted({r["bucket"] for r in records if r["side"] == side}))
        ax.set_xlabel(f"{side} popularity bucket (1 = fewest training interactions)")
        ax.set_ylabel("mean fraction of dimensions kept")
        ax.set_ylim(0, 1.05)
    return _save_figure(plt, fig, axes, title, path)


# ------------------------------------------------------------------ costs
_COST_TEXT = (
    "One accounting for every row. *Dense table* = the prunable tensors as dense fp32 "
    "(4 bytes × `prunable_params`). *Export* = what `export` writes for those tensors: a 1-bit-per-entry "
    "bitmap plus 4 bytes per kept value (`active_params`), i.e. (1−s)+1/32 of the dense table; the file adds "
    "the non-prunable parameters as they are and a few KB of metadata. *MACs relative to dense*: "
    "`recbole_lth.costs` (each multiply-accumulate of the backbone's products is attributed to the pruned "
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
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        import yaml

        return int((yaml.safe_load(config_path.read_text()) or {}).get("train_batch_size") or 2048)
    return 2048


def computed_macs(run_dir: Path, rows: list[dict], settings: dict, model=None) -> tuple[list, str]:
    """``recbole_lth.costs`` MACs for the rows that carry no ``macs_*`` columns
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
        from recbole_lth import costs
    except ImportError:
        return out, "recbole_lth.costs is not installed"
    try:
        model = model if model is not None else rebuild(run_dir)[1]
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


# ----------------------------------------------------------------- report
def _ticket_file(run_dir: Path, key) -> Path:
    return run_dir / "tickets" / str(key) / "ticket.pt"


def default_analysis_ticket(run_dir: Path, rows: list[dict]) -> str | None:
    """The sparsest ticket whose weights are stored."""
    stored = [r for r in rows if _ticket_file(run_dir, r.get("ticket")).is_file()
              and isinstance(r.get("sparsity"), (int, float))]
    return max(stored, key=lambda r: r["sparsity"])["ticket"] if stored else None


def _embedding_section(run_dir: Path, rows: list[dict], ticket: str | None, buckets: int) -> list[str]:
    lines = ["## Embedding sizes vs popularity", ""]
    ticket = ticket or default_analysis_ticket(run_dir, rows)
    if ticket is None or not _ticket_file(run_dir, ticket).is_file():
        return lines + [f"No stored ticket to analyse ({ticket or 'none in this run'}).", ""]
    stored = checkpoint.load(_ticket_file(run_dir, ticket))
    masks = stored.get("masks") or {}
    counts = load_popularity(run_dir)
    records, notes = embedding_size_buckets(masks, counts, buckets)
    sparsity = next((r.get("sparsity") for r in rows if r.get("ticket") == ticket), None)
    lines += [
        f"Ticket `{ticket}` (sparsity {fmt(sparsity)}). Kept dimensions = entries of the row (or column) the "
        f"mask keeps. Popularity = interactions in the **training split** (`{POPULARITY_FILE}`); users and "
        f"items (padding id 0 excluded) are sorted by it and split into {buckets} equal-size buckets, "
        f"bucket 1 the least popular.",
        "",
    ]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    if not records:
        return lines + ["No user or item table among the prunable tensors.", ""]
    lines.append(md_table(
        ["tensor", "side", "bucket", "training interactions", "entities", "mean kept dims", "of width", "kept fraction"],
        [[f"`{r['tensor']}`", r["side"], r["bucket"], f"{r['min_inter']}–{r['max_inter']}", r["entities"],
          f"{r['mean_kept']:.2f}", r["width"], f"{r['kept_fraction']:.3f}"] for r in records],
    ))
    plot_embedding_sizes(run_dir / "embedding_sizes.png", records,
                         f"kept dimensions vs popularity, ticket {ticket} (sparsity {fmt(sparsity)})")
    return lines + ["", "![embedding sizes](embedding_sizes.png)", ""]


def write_report(run_dir, ticket: str | None = None, buckets: int = 5, model=None) -> Path:
    """Write ``report.md``, ``curve.png`` and ``embedding_sizes.png`` into ``run_dir``.

    ``model``: the run's RecBole model, for the MAC count (only its sizes are
    read); without it the model is rebuilt from ``settings.json`` when needed."""
    run_dir = Path(run_dir)
    rows = read_results(run_dir)
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
        f"A ticket is **winning** when its test {k_text} ≥ the dense reference's (LTH-MRS: a′ ≥ a; K is the "
        f"valid_metric's K when that is a Recall, else the largest K in the results). The papers' second "
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
            win = is_winning(row, dense, metric)
            epochs_ok = (
                row["best_epoch"] <= dense["best_epoch"]
                if isinstance(row.get("best_epoch"), int) and isinstance(dense.get("best_epoch"), int) else None
            )
            table.append([row.get("ticket"), row.get("method"), row.get("sparsity")]
                         + [pct(relative_change(row.get(c), dense.get(c))) for c in test_columns]
                         + ["(reference)" if row is dense else "**yes**" if win else ("no" if win is False else ""),
                            "" if row is dense else epochs_ok])
        lines.append(md_table(
            ["ticket", "method", "sparsity"] + [f"Δ {c.removeprefix('test_')}" for c in test_columns]
            + ["winning", "epochs ≤ dense"], table,
        ))
        winners = [r for r in rows if is_winning(r, dense, metric) and not _is_zero(r.get("sparsity"))]
        lines.append("")
        if winners:
            best = max(winners, key=lambda r: r["sparsity"])
            lines.append(f"{len(winners)} sparse winning ticket(s); the sparsest is `{best['ticket']}` at "
                         f"sparsity {fmt(best['sparsity'])} ({pct(relative_change(best[metric], dense[metric]))} "
                         f"{k_text}).")
        else:
            lines.append("No sparse winning ticket in this run.")
        lines.append("")

    if metric:
        series = [(str(m), [r for r in rows if r.get("method") == m]) for m in methods]
        baselines = [(f"dense ({dense.get('ticket')})", dense)] if dense else []
        plot_curves(run_dir / "curve.png", series, baselines, [m for m in (metric, ndcg) if m],
                    f"{model_name} on {dataset}: test metric vs sparsity")
        lines += ["![metric vs sparsity](curve.png)", ""]

    lines += _embedding_section(run_dir, rows, ticket, buckets)

    macs, why_not = computed_macs(run_dir, rows, settings, model)
    lines += ["## Costs", "", _COST_TEXT, ""] + ([f"MACs fall back to 1−s: {why_not}.", ""] if why_not else [])
    lines += [md_table(COST_HEADERS, cost_rows(rows, macs)), ""]
    total_seconds = sum(r["train_seconds"] for r in rows if isinstance(r.get("train_seconds"), (int, float)))
    lines += [f"Total training wall time: {total_seconds:.1f} s.", ""]

    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_report_logged(run_dir, model=None) -> Path | None:
    """``write_report`` for the end of a run: a failure is a warning, never a lost result."""
    try:
        path = write_report(run_dir, model=model)
        logger.info(f"report: {path}")
        return path
    except Exception as err:  # the results are already on disk; the report is a view of them
        logger.warning(f"report not written for {run_dir}: {type(err).__name__}: {err}")
        return None
