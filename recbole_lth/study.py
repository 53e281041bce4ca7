"""A command's study: the runs it makes (one per seed, or one), how they
are spread (this process, ``workers`` local or Ray workers, or ``--nproc``
ranks) and the methods' plans on each prepared run.

:func:`plan_study` does every check that needs no data; :func:`run_study`
checks every run (``session.check_everything``), writes them under their
locks, has the workers train the tickets, then writes each run's results
and report here, and the summary over seeds.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from recbole_lth import methods
from recbole_lth.core import paths
from recbole_lth.core.errors import ConfigError
from recbole_lth.engine import distributed, parallel
from recbole_lth.engine.progress import Progress
from recbole_lth.engine.results import read_results
from recbole_lth.engine.run import Run
from recbole_lth.request import Request
from recbole_lth.session import (
    Console, check_everything, default_run_dir, identity_dir, new_run, run_lock, run_log, write_run,
)
from recbole_lth.sparse import distill
from recbole_lth.views.report import write_report_logged
from recbole_lth.views.summary import write_summary

logger = logging.getLogger("recbole_lth")


@dataclass
class RunResult:
    """A run's directory and rows; for a study over ``seeds``, the study
    folder, every seed's rows (with a ``seed`` column) and each seed's result."""

    run_dir: Path
    rows: list
    seed_runs: dict = field(default_factory=dict)  # seed -> RunResult

    @property
    def results_csv(self) -> Path:
        if self.seed_runs:
            return paths.StudyPaths(self.run_dir).summary_csv
        return paths.RunPaths(self.run_dir).results


@contextmanager
def torch_threads(count: int | None):
    """``worker_threads`` for the tickets this process trains; None: as it is."""
    if not count:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plan_all(prepared: Run, hooks=()) -> None:
    """Every method's plan, in the order given, on one run."""
    for name in prepared.views:
        plan_one(prepared, name, hooks)


def plan_one(prepared: Run, name: str, hooks=()) -> None:
    view = prepared.for_method(name)
    view.ticket_hooks.extend(hooks)
    distill.install(view)  # kd_weight > 0: distil every sparse ticket of this method
    methods.get(name).plan(view)


def finish(prepared: Run) -> RunResult:
    prepared.write_rows()
    logger.info(f"results: {prepared.paths.results}")
    if distributed.is_main():
        write_report_logged(prepared.run_dir, prepared.model)  # a failure is a warning; results are on disk
    return RunResult(prepared.run_dir, prepared.rows)


# --------------------------------------------------------- seeds, workers
@dataclass(frozen=True)
class Job:
    """One run directory of a command: the whole study at one seed."""

    seed: int | None
    request: Request

    @property
    def label(self) -> str:
        return "" if self.seed is None else f"seed {self.seed}"


@dataclass(frozen=True)
class Study:
    settings: dict
    root: Path | None  # the study folder (seeds), or None: one run
    jobs: tuple
    notices: tuple = ()

    @property
    def parallel(self) -> bool:
        return self.settings["workers"] > 1 or self.settings["executor"] == "ray"


def default_study_dir(settings: dict) -> Path:
    return identity_dir({k: v for k, v in settings.items() if k != "seed"}, "-seeds")


def plan_study(request: Request, hooks=()) -> Study:
    """The runs a command makes (one per seed) and how they are spread; every
    check that needs no data."""
    settings, views = request.settings()
    notices = tuple(parallel.check(settings, hooks))
    tickets = methods.planned_tickets(views) * len(settings.get("seeds") or [None])
    if settings["workers"] > max(1, tickets):  # an idle worker only costs an interpreter (issue 35)
        notices += (f"workers={settings['workers']} for {tickets} ticket(s): {max(1, tickets)} worker(s) start",)
        settings = {**settings, "workers": max(1, tickets)}
    if settings["executor"] == "ray":
        parallel.check_ray_address(settings.get("ray_address"))
    seeds = settings.get("seeds")
    base = _absolute_paths(settings, request)
    if not seeds:
        run_dir = Path(settings.get("run_dir") or default_run_dir(settings)).resolve()
        _refuse_other_kind(run_dir, study=False)
        return Study(settings, None, (Job(None, base.with_overrides(run_dir=str(run_dir))),), notices)
    if "seed" in request.user_values():
        raise ConfigError("seed", request.user_values()["seed"],
                          "not set together with seeds (each seed's run sets its own)")
    if settings.get("nproc") is not None:
        raise ConfigError("nproc", settings["nproc"], "nothing with seeds (use workers to run seeds at once)")
    if hooks:
        raise ConfigError("seeds", seeds, "null under tune (each trial is one run at one seed)")
    root = Path(settings.get("run_dir") or default_study_dir(settings)).resolve()
    _refuse_other_kind(root, study=True)
    study_paths = paths.StudyPaths(root)
    jobs = tuple(Job(seed, base.with_overrides(seeds=None, seed=seed, run_dir=str(study_paths.seed_run(seed))))
                 for seed in seeds)
    return Study(settings, root, jobs, notices)


def _refuse_other_kind(root: Path, study: bool) -> None:
    """A seed study's folder holds one run directory per seed and its
    summary; a run's folder holds tickets.  Either written into the other
    would overwrite its curve.png and mix two studies' files."""
    run_paths, study_paths = paths.RunPaths(root), paths.StudyPaths(root)
    if study and (run_paths.settings.exists() or run_paths.stored_tickets()):
        raise ConfigError("run_dir", str(root), "a new folder for a study over seeds: this one is a single run's "
                                                "directory (it holds settings.json or tickets)")
    if not study and (study_paths.settings.exists() or study_paths.seed_runs()):
        raise ConfigError("run_dir", str(root), "a new folder for a run without seeds: this one is a study over "
                                                "seeds (give seeds, or one of its seed_* folders)")


def _absolute_paths(settings: dict, request: Request) -> Request:
    """The request with its files and folders as absolute paths: a worker (a
    Ray task on another node, too) may start in another working directory.
    Only where-it-runs keys change, so no run's identity does."""
    files = settings.get("config_files") or None
    overrides = dict(request.config_dict or {})
    if settings.get("data_path"):
        overrides["data_path"] = str(Path(settings["data_path"]).resolve())
    overrides.pop("config_files", None)
    return replace(request, config_files=[str(Path(f).resolve()) for f in files] if files else request.config_files,
                   config_dict=overrides)


def run_study(study: Study, hooks=()) -> RunResult:
    """Every check of every run, then the runs: their tickets first by the
    workers (if any), then one pass here that writes the results and reports."""
    checked = [check_everything(job.request) for job in study.jobs]
    with ExitStack() as stack:
        for one in checked:
            stack.enter_context(run_lock(one.run_paths))
        if study.root is not None:
            settings = {k: v for k, v in study.settings.items() if k != "seed"}
            paths.write_json(paths.StudyPaths(study.root).settings, settings)
        runs = [write_run(one) for one in checked]
        for notice in list(study.notices) + [n for one in checked for n in one.notices]:
            logger.warning(notice)
        settings = study.settings
        progress = Progress(sum(methods.planned_tickets(r.views) for r in runs), str(runs[0].config["valid_metric"]),
                            enabled=bool(settings.get("progress", True)))
        try:
            if study.parallel:
                _run_workers(study, runs, progress)
            results = {}
            for job, prepared in zip(study.jobs, runs):
                prepared.on_row = progress.for_run(prepared.paths, job.label)
                with run_log(prepared.paths.log):
                    logger.info(f"run directory: {prepared.run_dir}")
                    plan_all(prepared, hooks)
                    results[job.seed] = finish(prepared)
        finally:
            progress.close()
    if study.root is None:
        return results[None]
    seed_rows = {seed: result.rows for seed, result in results.items()}
    summary = write_summary(study.root, seed_rows, settings.get("valid_metric"),
                            f"{settings['model']} on {settings['dataset']}, seeds {list(seed_rows)}")
    logger.info(f"summary over seeds {list(seed_rows)}: {summary}")
    rows = [{"seed": seed, **row} for seed, result in results.items() for row in result.rows]
    return RunResult(study.root, rows, seed_runs=results)


def _run_workers(study: Study, runs: list, progress: Progress) -> None:
    """The tickets of every run, trained by ``workers`` workers; the driver
    reports each ticket as a worker finishes it."""
    settings = study.settings
    workers = settings["workers"]
    threads = parallel.threads_per_worker(workers, settings.get("worker_threads"))
    labels = {str(r.paths.root): job.label for job, r in zip(study.jobs, runs)}
    logger.info(f"{workers} workers ({settings['executor']}), {threads} torch threads each")

    def poll() -> None:
        for prepared in runs:
            for key in prepared.paths.stored_tickets():
                result = prepared.paths.ticket_result(key)
                if (str(prepared.paths.root), key) not in progress.seen and result.is_file():
                    progress.record(prepared.paths, labels[str(prepared.paths.root)], paths.read_json(result), True)

    args = (study.jobs, workers, parallel.gpu_ids(settings))
    started = time.perf_counter()
    if settings["executor"] == "ray":
        parallel.run_ray(_worker_main, args, workers, threads, poll, settings.get("ray_address"))
    else:
        parallel.run_local(_worker_main, args, workers, threads, poll)
    poll()
    logger.info(f"workers done in {time.perf_counter() - started:.1f} s")


def _worker_main(jobs: tuple, workers: int, gpus: list, index: int) -> None:
    """One worker: every (seed, method) unit of the study, training only the
    tickets it claims; it writes tickets, never results.csv or a report."""
    claims = parallel.Claims()
    opened: dict = {}
    override = {"gpu_id": gpus[index % len(gpus)]} if gpus else {}

    def open_run(job: Job) -> Run:
        if job.seed not in opened:
            checked = check_everything(job.request.with_overrides(**override, progress=False))
            for handler in logging.getLogger().handlers:  # the driver's console speaks for the study
                if isinstance(handler, Console):
                    handler.setLevel(logging.WARNING)
            opened[job.seed] = new_run(checked)
            opened[job.seed].claims = claims
        return opened[job.seed]

    def run_unit(unit) -> None:
        job, name = unit
        prepared = open_run(job)
        with run_log(prepared.paths.log):
            plan_one(prepared, name)

    names = methods.names(jobs[0].request.settings()[0]["method"])
    units = [(job, name) for job in jobs for name in names]
    parallel.run_units(parallel.rotated(units, index, workers), run_unit, claims)


def launched_processes(request: Request, hooks=()) -> int | None:
    """``nproc`` when this call should launch that many processes (RecBole's
    key, from the command line, a yaml file or ``config_dict``); None when it
    runs here (no ``nproc``, or this process is already one rank of a launch)."""
    if distributed.active():
        return None
    settings, _ = request.settings()
    nproc = settings.get("nproc")
    if nproc is None:
        return None
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError("nproc", nproc, "a whole number >= 1 (processes of one distributed search)")
    if hooks:
        raise ConfigError("nproc", nproc, "nothing: tune runs its trials in one process")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and settings.get("use_gpu", True) else 0
    if gpus and nproc > gpus:
        raise ConfigError("nproc", nproc, f"at most {gpus}, one process per GPU")
    return nproc


def launch(nproc: int, request: Request, rank_main) -> RunResult:
    """``rank_main(request)`` in ``nproc`` processes, one rank each; the run
    directory rank 0 wrote and its rows."""
    settings, _ = request.settings()
    distributed.launch(nproc, rank_main, (request,))
    run_dir = Path(settings.get("run_dir") or default_run_dir(settings))
    return RunResult(run_dir, read_results(run_dir))
