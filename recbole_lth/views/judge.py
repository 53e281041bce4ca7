"""Judging tickets against the dense reference (the verdicts of report and compare).

* The dense reference is the run's dense ticket (``paths.DENSE_TICKET``), or
  else a row with sparsity 0.
* A ticket is *winning* when its test Recall@K is at least the dense
  reference's (LTH-MRS, a' >= a), with K the ``valid_metric``'s K when that
  is a Recall, else the largest K in the columns; a labeled task's
  ``valid_metric`` (AUC) otherwise, "at least" read in the metric's
  direction (a LogLoss wins at or below the reference's: the task protocol).
"""
from __future__ import annotations

from recbole_lth.core import tasks
from recbole_lth.core.paths import DENSE_TICKET, is_dense_candidate


def is_zero(value) -> bool:
    return isinstance(value, (int, float)) and abs(value) < 1e-12


def dense_reference(rows: list[dict]) -> dict | None:
    """The run's dense ticket row, else the first row with sparsity 0."""
    dense = [r for r in rows if is_zero(r.get("sparsity"))]
    named = [r for r in dense if r.get("ticket") == DENSE_TICKET]
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


def at_least(metric) -> str:
    """"≥", or "≤" for a metric where lower is better: "at least as good" in symbols."""
    return "≤" if tasks.lower_is_better(metric) else "≥"


def metric_label(column: str) -> str:
    name = column.removeprefix("test_")
    known = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "hit": "Hit", "precision": "Precision",
             "auc": "AUC", "logloss": "LogLoss", "gauc": "GAUC", "rmse": "RMSE", "mae": "MAE"}
    base, _, k = name.partition("@")
    return f"test {known.get(base, base)}{'@' + k if k else ''}"


def relative_change(value, reference) -> float | None:
    if not isinstance(value, (int, float)) or not isinstance(reference, (int, float)) or reference == 0:
        return None
    return (value - reference) / reference


def is_empty(row: dict) -> bool:
    """A ticket with no non-zero prunable weight: it ranks by tie order, so
    its metrics say nothing about the method."""
    return row.get("nonzero_params") == 0 and bool(row.get("prunable_params"))


def is_winning(row: dict, dense: dict | None, metric: str | None) -> bool | None:
    if dense is None or metric is None or row.get(metric) is None or dense.get(metric) is None or is_empty(row):
        return None
    return tasks.at_least_as_good(row[metric], dense[metric], metric)


def verdict_cell(row: dict, dense: dict | None, metric: str | None) -> str:
    if row is dense:
        return "(reference)"
    if is_dense_candidate(row.get("ticket")):
        return "(dense candidate)"
    if is_empty(row):
        return "empty (no weight left)"
    win = is_winning(row, dense, metric)
    return "**yes**" if win else ("no" if win is False else "")
