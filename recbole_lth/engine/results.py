"""``results.csv``: one row per ticket, any columns a method adds.

Rows are plain dicts; the engine appends them, the report, ``compare`` and
the export read them back here (numbers parsed, empty cells None).
"""
from __future__ import annotations

import csv
from pathlib import Path

from recbole_lth.core import paths


# Columns measured in wall time: they differ from one run of a ticket to the
# next, and are left out wherever two runs are compared for identity.
WALL_TIME_COLUMNS = frozenset({"train_seconds", "search_seconds", "explore_seconds", "explore_fraction"})


def plain(value):
    """Metric values come back from RecBole as numpy scalars; rows hold plain floats."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _parse(text):
    if text is None or text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def columns_of(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns


def read_results(run_dir) -> list[dict]:
    """Rows of ``results.csv`` with numbers parsed (empty cells are None)."""
    path = paths.RunPaths(run_dir).results
    if not path.is_file():
        raise FileNotFoundError(f"no results.csv in {run_dir}: not a recbole_lth run directory")
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_settings(run_dir) -> dict:
    path = paths.RunPaths(run_dir).settings
    return paths.read_json(path) if path.is_file() else {}


def write_results(run_dir, rows: list[dict]) -> Path:
    return paths.write_csv(paths.RunPaths(run_dir).results, rows)
