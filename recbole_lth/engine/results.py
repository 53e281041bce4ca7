"""``results.csv``: one row per ticket, any columns a method adds.

Rows are plain dicts; the engine appends them, the report, ``compare`` and
the export read them back here (numbers parsed, empty cells None).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from recbole_lth.core import paths
from recbole_lth.core.errors import RunDamaged


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
    """Rows of ``results.csv`` with numbers parsed (empty cells are None).

    A damaged file is refused, never read as data: an empty file would be a
    run of 0 tickets, and a row cut mid-field a metric of 0."""
    path = paths.RunPaths(run_dir).results
    if not path.is_file():
        raise FileNotFoundError(f"no results.csv in {run_dir}: not a recbole_lth run directory")
    text = path.read_text()
    damage = _damage(text)
    if damage:
        raise RunDamaged(
            f"{path} is damaged ({damage}); re-run the command that made {run_dir} to rebuild it from its "
            f"finished tickets (nothing is retrained)"
        )
    return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text, newline=""))]


def _damage(text: str) -> str | None:
    """What is wrong with the text of a ``results.csv``, or None.  Every
    line the run writes ends with a line break, and every row has a cell for
    every column, so a cut file shows as one or the other."""
    if not text.strip():
        return "it is empty"
    if not text.endswith("\n"):
        return f"cut short at line {text.count(chr(10)) + 1}"
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    if "ticket" not in header:
        return "its first line is not the header of a run's rows"
    for number, cells in enumerate(reader, start=2):
        if len(cells) != len(header):
            return f"line {number} has {len(cells)} cells for {len(header)} columns"
    return None


def previous_rows(run_dir) -> list[dict]:
    """The rows an earlier run of this directory left, or none when there
    is no readable file (it is then rebuilt)."""
    try:
        return read_results(run_dir)
    except (FileNotFoundError, RunDamaged):
        return []


def row_identity(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("method", "ticket", "round", "target_sparsity"))


def with_unreached(rows: list[dict], previous: list[dict]) -> list[dict]:
    """``rows`` so far, then the earlier run's rows this one has not reached
    yet: a re-run stopped part way (a damaged ticket, Ctrl-C) leaves every
    row the directory had, instead of the few it re-read before stopping."""
    seen = {row_identity(r) for r in rows}
    return rows + [r for r in previous if row_identity(r) not in seen]


def read_settings(run_dir) -> dict:
    path = paths.RunPaths(run_dir).settings
    return paths.read_json(path) if path.is_file() else {}


def write_results(run_dir, rows: list[dict]) -> Path:
    return paths.write_csv(paths.RunPaths(run_dir).results, rows)
