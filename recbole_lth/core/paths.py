"""Every file name of a run directory, ticket names, and the atomic writes.

One home for names (OpenLTH's ``paths.py``): no other module spells a file
name of the run directory or builds a ticket name.  Every write goes to a
temporary file that is renamed into place, so an interrupted run never
leaves a half-written file behind: a file either holds its old content or
its complete new one.

Layout of a run directory::

    settings.json  config.yaml  data.json  results.csv  run.log  run.lock  tensorboard/
    init_state.pt  rewind_state.pt  popularity.pt  tables.json
    report.md  curve.png  embedding_sizes.png
    tickets/<ticket>/ticket.pt  tickets/<ticket>/result.json
    search/<method>.pt  search/<method>.json      (a method's own search state)
    baseline_init/<ticket>.pt                     (a baseline model's initial weights)
    exports/<ticket>[.fp16|.int8].pt  exports/<ticket>[.fp16|.int8].json
    claims/<ticket>.lock                          (parallel runs: the worker training it)
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

# The ticket every method shares as its dense model: the sparsity-0 row, the
# rewind source and the default distillation teacher.
DENSE_TICKET = "dense"


def round_ticket(method: str, round_idx: int) -> str:
    """Round ``r >= 1`` of an iterative method (round 0 is :data:`DENSE_TICKET`)."""
    return f"{method}_round_{round_idx:02d}"


def target_ticket(method: str, target: float) -> str:
    """The ticket of ``method`` at ``target`` sparsity, named by the exact
    value (``repr`` round-trips a float), so two different targets never share
    a ticket: ``omp_0.5``, ``omp_0.50004``."""
    return f"{method}_{float(target)!r}"


def dense_candidate(weight_decay: float) -> str:
    """A dense ticket trained at one value of ``dense_weight_decays``."""
    return f"{DENSE_TICKET}_wd_{float(weight_decay)!r}"


def is_dense_candidate(key) -> bool:
    """Whether ``key`` names a :func:`dense_candidate` ticket."""
    return isinstance(key, str) and key.startswith(f"{DENSE_TICKET}_wd_")


class RunPaths:
    """The files of one run directory."""

    def __init__(self, root):
        self.root = Path(root)

    # --------------------------------------------------------- run level
    @property
    def settings(self) -> Path:
        return self.root / "settings.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_fingerprint(self) -> Path:
        """Sizes and hashes of the split the run was started with."""
        return self.root / "data.json"

    @property
    def lock(self) -> Path:
        """Held (flock) by the one process running this directory."""
        return self.root / "run.lock"

    @property
    def results(self) -> Path:
        return self.root / "results.csv"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def init_state(self) -> Path:
        return self.root / "init_state.pt"

    @property
    def rewind_state(self) -> Path:
        return self.root / "rewind_state.pt"

    @property
    def tensorboard(self) -> Path:
        """RecBole's per-epoch TensorBoard logs (one folder per ticket) and the
        run's per-ticket scalars (``tickets/``)."""
        return self.root / "tensorboard"

    @property
    def popularity(self) -> Path:
        return self.root / "popularity.pt"

    @property
    def tables(self) -> Path:
        return self.root / "tables.json"

    # ------------------------------------------------------------ report
    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def curve(self) -> Path:
        return self.root / "curve.png"

    @property
    def embedding_sizes(self) -> Path:
        return self.root / "embedding_sizes.png"

    # ----------------------------------------------------------- tickets
    @property
    def tickets(self) -> Path:
        return self.root / "tickets"

    def ticket_weights(self, key: str) -> Path:
        return self.tickets / key / "ticket.pt"

    def ticket_result(self, key: str) -> Path:
        """Written last: its presence marks the ticket finished."""
        return self.tickets / key / "result.json"

    def stored_tickets(self) -> list[str]:
        if not self.tickets.is_dir():
            return []
        return sorted(p.name for p in self.tickets.iterdir() if (p / "ticket.pt").is_file())

    def search_state(self, method: str) -> Path:
        """Tensors a method's search saves once (PEP's recorded masks)."""
        return self.root / "search" / f"{method}.pt"

    def search_summary(self, method: str) -> Path:
        return self.root / "search" / f"{method}.json"

    def claim(self, key: str) -> Path:
        """Held (flock) by the worker training ``key`` (or running the search
        ``key``) in a parallel run; a killed worker's claim is released."""
        return self.root / "claims" / f"{key}.lock"

    def baseline_init(self, key: str) -> Path:
        """Initial weights of a baseline's own model, saved once."""
        return self.root / "baseline_init" / f"{key}.pt"

    def export(self, key: str, values: str = "fp32") -> Path:
        """A compact export; fp16/int8 values get their own file."""
        suffix = "" if values == "fp32" else f".{values}"
        return self.root / "exports" / f"{key}{suffix}.pt"

    def export_evaluation(self, key: str, values: str = "fp32") -> Path:
        """Bytes and test metrics of a compact export, evaluated compact."""
        return self.export(key, values).with_suffix(".json")

    def export_evaluations(self) -> list[Path]:
        folder = self.root / "exports"
        return sorted(folder.glob("*.json")) if folder.is_dir() else []


class StudyPaths:
    """The folder of a study over seeds (``seeds``): one ordinary run
    directory per seed, and the statistics over them::

        study.json  seed_<seed>/  summary.csv  summary.md  summary.tex  curve.png  frontier.png
    """

    def __init__(self, root):
        self.root = Path(root)

    @property
    def settings(self) -> Path:
        """The study's settings, without ``seed`` (each seed's run holds its own)."""
        return self.root / "study.json"

    def seed_run(self, seed: int) -> Path:
        return self.root / f"seed_{int(seed)}"

    def seed_runs(self) -> list[Path]:
        """The seed folders already in the study (any seeds, any command)."""
        return sorted(self.root.glob("seed_*")) if self.root.is_dir() else []

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    @property
    def summary_tex(self) -> Path:
        return self.root / "summary.tex"

    @property
    def curve(self) -> Path:
        return self.root / "curve.png"

    @property
    def frontier(self) -> Path:
        return self.root / "frontier.png"


class TunePaths:
    """The files of one tuning study: one run directory per trial."""

    def __init__(self, root):
        self.root = Path(root)

    @property
    def study(self) -> Path:
        """Optuna's journal: resumes the study."""
        return self.root / "study.log"

    @property
    def results(self) -> Path:
        return self.root / "tuning.csv"

    @property
    def lock(self) -> Path:
        """Held while a process tunes in this folder (a second one is refused)."""
        return self.root / "tune.lock"

    def trial_dir(self, number: int) -> Path:
        return self.root / f"trial_{number:03d}"

    def trial_row(self, number: int) -> Path:
        return self.root / f"trial_{number:03d}.json"


# ------------------------------------------------------------ stored table axes
def save_table_axes(run_paths: RunPaths, axes: dict, shapes: dict) -> None:
    """Which entity each prunable tensor indexes, along which axis (the mask
    core decides it from the module types; the report reads it here)."""
    write_json(run_paths.tables, {
        n: {"shape": list(shapes[n]), "side": a[0] if a else None, "axis": a[1] if a else None}
        for n, a in axes.items()
    })


def table_axes(run_dir) -> dict:
    run_paths = RunPaths(run_dir)
    if not run_paths.tables.is_file():
        return {}
    return {n: (t["side"], t["axis"]) if t["side"] else None for n, t in read_json(run_paths.tables).items()}


# ------------------------------------------------------------ atomic writes
def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text(path, text: str) -> Path:
    path = Path(path)
    tmp = _temporary(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2))


def read_json(path):
    """A damaged file's error names the file: json's own names only a line
    and a column, which says nothing when a command reads five files."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is damaged ({err.msg}: line {err.lineno} column {err.colno})") from err


def write_csv(path, rows: list[dict]) -> Path:
    """``rows`` under the union of their columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    path = Path(path)
    tmp = _temporary(path)
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def save_tensors(path, payload) -> Path:
    """``torch.save`` of tensors and plain data, atomically."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    return path
