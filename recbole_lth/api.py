"""``recbole_lth.run``: settings -> checks -> RecBole data/model -> method.

Everything that can be wrong with the input is checked before the run
directory is written: the settings (``methods.check``), the dataset's files,
and what needs the model (``prune_params`` must select a tensor).  Only then
is ``settings.json`` written, so a refused command leaves nothing behind and
the corrected one runs.
"""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recbole_lth import backbones, methods
from recbole_lth.core import paths, tasks
from recbole_lth.core.errors import ConfigError
from recbole_lth.engine import builder, distributed, parallel
from recbole_lth.engine.progress import Progress
from recbole_lth.engine.results import read_results
from recbole_lth.engine.run import Run
from recbole_lth.sparse import distill
from recbole_lth.views.popularity import save_popularity
from recbole_lth.views.report import write_report_logged
from recbole_lth.views.summary import write_summary
from recbole_lth.core.settings import (
    check_common, check_dataset, check_unknown, declared_defaults, differing_keys, legacy_run_identity,
    merge_settings, run_identity, user_values,
)

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


def settings_for(model=None, dataset=None, method=None, config_files=None, config_dict=None
                 ) -> tuple[dict, dict[str, dict]]:
    """The merged settings of the run and each method's view of them, all
    checked (no data loaded, nothing written).

    A single method's view is the run's settings.  A study (``method`` a
    list) merges every method's properties into the run's settings (what is
    stored and hashed); each method trains with its own view: overall <
    that method's properties < the user's files and overrides."""
    merged = merge_settings(model, dataset, method, config_files, config_dict, methods.properties_files)
    backbones.check_model(merged.get("model"))
    check_dataset(merged)
    recbole_defaults = builder.recbole_values(merged["model"], merged["dataset"])
    tasks.resolve(merged, recbole_defaults)
    given = user_values(config_files, config_dict)
    known = set(methods.all_keys()) | builder.recbole_keys(merged["model"], merged["dataset"]) | {"method"}
    check_unknown(given, known)
    names = methods.names(merged.get("method"))
    for key in methods.foreign_keys(given, names):
        raise ConfigError(key, given[key], f"nothing in a run of {', '.join(names)}: {key} is read by "
                                           f"{' and '.join(methods.owners(key))} only (drop it, or add that method)")
    if len(names) == 1:
        merged["method"] = names[0]  # a one-method list (--method=[dsl]) is that method's run
        methods.check(merged)
        return merged, {names[0]: merged}
    overrides = dict(config_dict or {})
    views = {}
    for name in names:
        view = merge_settings(model, dataset, None, config_files, {**overrides, "method": name},
                              methods.properties_files)
        tasks.resolve(view, recbole_defaults)
        methods.check(view)
        views[name] = view
    check_common(merged)
    for key in ("target_sparsities",):  # stored as the methods train them
        if merged.get(key) == "imp":
            merged[key] = next(iter(views.values()))[key]
    return merged, views


def plugin_defaults(settings: dict) -> dict:
    """The values these settings' keys take with no user input: RecBole's
    own files for the model and dataset, under the plugin's layers for the
    method(s).  A value given explicitly at its default (``--seed=2020``)
    then names the same run directory as leaving it out."""
    recbole = builder.recbole_values(settings["model"], settings["dataset"]) if settings.get("model") else {}
    return {**recbole, **declared_defaults(settings["method"], methods.properties_files, settings.get("model"))}


def _identity_dir(settings: dict, suffix: str = "") -> Path:
    """``<output_root>/<model>-<dataset>-<methods>-<identity><suffix>``; a
    folder named by the legacy identity (every setting hashed) when it exists
    and the current one does not, so a run started before is resumed."""
    label = "+".join(methods.names(settings["method"]))
    root = Path(settings.get("output_root") or "lth_runs")
    prefix = f"{settings['model']}-{settings['dataset']}-{label}-"
    current = root / f"{prefix}{run_identity(settings, plugin_defaults(settings))}{suffix}"
    # The legacy name hashed every RecBole key the user gave, even at RecBole's default.
    declared = declared_defaults(settings["method"], methods.properties_files, settings.get("model"))
    legacy = root / f"{prefix}{legacy_run_identity(settings, declared)}{suffix}"
    return legacy if not current.exists() and legacy.exists() else current


def default_run_dir(settings: dict) -> Path:
    return _identity_dir(settings)


def _refuse_orphaned_tickets(run_paths: paths.RunPaths, missing: Path, what: str) -> None:
    """Finished tickets whose run directory lost ``missing`` cannot be matched
    to these settings or data: reusing them would report another run's metrics."""
    if run_paths.stored_tickets():
        raise ConfigError(
            "run_dir", str(run_paths.root),
            f"a new folder, or this one with its {missing.name} restored: it holds finished tickets but no "
            f"{missing.name}, so nothing says which {what} trained them (they are left untouched)",
        )


def _check_run_dir(run_paths: paths.RunPaths, settings: dict) -> None:
    """A run directory resumes only the run it was started with."""
    if not run_paths.settings.exists():
        _refuse_orphaned_tickets(run_paths, run_paths.settings, "settings")
        return
    try:
        stored = paths.read_json(run_paths.settings)
    except ValueError as err:
        raise ConfigError(
            "run_dir", str(run_paths.root),
            f"a folder whose settings.json can be read (it is damaged: {err}); restore it, or use a new run_dir "
            f"(the finished tickets there are left untouched)",
        ) from err
    differing = differing_keys(stored, settings, plugin_defaults(settings))
    if differing:
        raise ConfigError(
            "run_dir", str(run_paths.root),
            f"a new folder, or this one with the settings it was started with "
            f"(these differ: {', '.join(differing)}); finished tickets there are left untouched",
        )


def _check_data(run_paths: paths.RunPaths, fingerprint: dict) -> None:
    """A run directory resumes only on the data it was started with."""
    if not run_paths.data_fingerprint.exists():
        _refuse_orphaned_tickets(run_paths, run_paths.data_fingerprint, "data")
        return
    stored = paths.read_json(run_paths.data_fingerprint)
    # Where the files live may change (data_path is a volatile key); what they hold may not.
    changes = [f"{k}: {stored.get(k)} -> {v}" for k, v in fingerprint.items() if k != "data_path" and stored.get(k) != v]
    if changes:
        raise ConfigError(
            "data_path", fingerprint.get("data_path"),
            f"the data this run directory was started with (it differs: {'; '.join(changes)[:300]}); "
            f"use a new run_dir for other data",
        )


@dataclass
class _Checked:
    """Everything a run needs, built and checked, nothing written yet."""

    settings: dict
    views: dict
    run_paths: paths.RunPaths
    config: object
    dataset: object
    data: tuple
    model: object
    prunable: dict
    fingerprint: dict
    notices: list  # warnings for the run's log


def _check_everything(model, dataset, method, config_files, config_dict) -> _Checked:
    """Every check, including those that need the data and the model (built
    on the data, never trained), before the run directory is touched."""
    settings, views = settings_for(model, dataset, method, config_files, config_dict)
    _console_logging(settings.get("state"))
    data_path = builder.resolve_data_path(settings)
    builder.check_atomic_files(settings, data_path)
    settings["data_path"] = data_path
    for view in views.values():
        view["data_path"] = data_path
    run_paths = paths.RunPaths(settings.get("run_dir") or default_run_dir(settings))
    _check_run_dir(run_paths, settings)

    config = builder.recbole_config(settings, run_paths.root)
    notices = []
    if settings.get("use_gpu") and torch.device(config["device"]).type != "cuda":
        notices.append("use_gpu=True, but no CUDA device is available to RecBole: running on the CPU")
    dataset_obj, train_data, valid_data, test_data = builder.load_judgeable_data(settings, config, data_path)
    fingerprint = {"data_path": data_path, **builder.data_fingerprint(train_data, valid_data, test_data)}
    _check_data(run_paths, fingerprint)
    model_obj = builder.new_model(config, train_data.dataset)
    prunable = backbones.prunable(model_obj, settings["prune_params"])
    numels = {n: p.numel() for n, p in prunable.items()}
    for view in views.values():
        methods.check_counts(view, numels)
    if settings.get("kd_teacher") and any(v.get("kd_weight") for v in views.values()):
        distill.check_teacher_file(settings["kd_teacher"], model_obj, config)
    return _Checked(settings, views, run_paths, config, dataset_obj, (train_data, valid_data, test_data),
                    model_obj, prunable, fingerprint, notices)


def _write(checked: _Checked) -> Run:
    """Write the run directory (under its lock) and return the ready ``Run``."""
    run_paths, settings = checked.run_paths, checked.settings
    if not run_paths.settings.exists():
        paths.write_json(run_paths.settings, settings)
    if not run_paths.data_fingerprint.exists():
        paths.write_json(run_paths.data_fingerprint, checked.fingerprint)
    paths.write_text(run_paths.config, builder.plain_config(checked.config))
    train_data = checked.data[0]
    save_popularity(run_paths, train_data.dataset, checked.model)  # training-split counts for the report
    paths.save_table_axes(run_paths, backbones.table_axes(checked.model, list(checked.prunable)),
                    {n: p.shape for n, p in checked.prunable.items()})
    logger.info(str(checked.dataset))
    run = _new_run(checked)
    run.init_state()  # saved before the first step, reloaded for every rewind
    return run


def _new_run(checked: _Checked) -> Run:
    train_data, valid_data, test_data = checked.data
    return Run(checked.settings, checked.config, train_data, valid_data, test_data, checked.model,
               checked.run_paths, checked.prunable, views=checked.views, make_dense=methods.dense.dense_ticket)


@contextmanager
def directory_lock(root: Path, lock_file: Path, key: str):
    """One process per folder (``lock_file``, an OS lock that a killed process
    releases; the file may stay, it blocks nothing); ``key`` names the folder's
    setting in the refusal."""
    from filelock import FileLock, Timeout

    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            key, str(root),
            f"a folder no other process is using: another recbole_lth process is running in it ({lock_file.name}); "
            f"wait for it to end, or choose another {key}",
        ) from None
    try:
        yield
    finally:
        lock.release()


def run_lock(run_paths: paths.RunPaths):
    """One process per run directory (``run.lock``)."""
    return directory_lock(run_paths.root, run_paths.lock, "run_dir")


def prepare(model=None, dataset=None, method=None, config_files=None, config_dict=None) -> Run:
    """Everything up to the first training step; returns a ready ``Run``.

    Every check runs before the run directory is written; the writes happen
    under the directory's lock (released when ``prepare`` returns: ``run``
    holds it for the whole run)."""
    checked = _check_everything(model, dataset, method, config_files, config_dict)
    with run_lock(checked.run_paths):
        return _write(checked)


class _Console(logging.StreamHandler):
    """The one console handler the plugin adds (once per process)."""


def _console_logging(state: str | None) -> None:
    import colorlog

    root = logging.getLogger()
    root.setLevel(getattr(logging, str(state or "INFO").upper(), logging.INFO))
    if not any(isinstance(h, _Console) for h in root.handlers):
        console = _Console()
        console.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)-15s %(levelname)s  %(message)s",
                                                       "%d %b %H:%M"))
        root.addHandler(console)


@contextmanager
def run_log(log_path: Path):
    """RecBole's and the plugin's log, also in ``run.log``."""
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s"))
    root.addHandler(file_handler)
    try:
        yield
    finally:
        root.removeHandler(file_handler)
        file_handler.close()


@contextmanager
def _rank_directory(checked: _Checked):
    """Rank 0 writes the run directory; another rank of a launched run works
    in a private copy of it, taken before rank 0 writes anything, and
    deleted at the end."""
    if not distributed.active():
        yield
        return
    distributed.barrier()  # every rank has checked everything; nothing is written yet
    scratch = None
    if not distributed.is_main():
        scratch = distributed.private_copy(checked.run_paths.root)
        checked.run_paths = paths.RunPaths(scratch)
        logging.getLogger().setLevel(logging.ERROR)
    distributed.barrier()
    try:
        yield
    finally:
        if scratch is not None:
            shutil.rmtree(scratch.parent, ignore_errors=True)


@contextmanager
def session(model=None, dataset=None, method=None, config_files=None, config_dict=None):
    """A prepared ``Run`` holding its directory's lock, with ``run.log`` open,
    for the duration."""
    checked = _check_everything(model, dataset, method, config_files, config_dict)
    with _rank_directory(checked), run_lock(checked.run_paths):
        run = _write(checked)
        with run_log(run.paths.log):
            for notice in checked.notices:
                logger.warning(notice)
            logger.info(f"run directory: {run.run_dir}")
            if distributed.active():
                logger.info(distributed.describe())
            logger.info(
                "prunable tensors (%s, scope %s): %s", run.settings["prune_params"], run.scope,
                {n: tuple(p.shape) for n, p in run.prunable.items()},
            )
            progress = Progress(methods.planned_tickets(run.views), str(run.config["valid_metric"]),
                                enabled=bool(run.settings.get("progress", True)) and distributed.is_main())
            run.on_row = progress.for_run(run.paths)
            try:
                yield run
            finally:
                progress.close()


def run(model=None, dataset=None, method=None, config_files=None, config_dict=None, hooks=()) -> RunResult:
    """Run one search (or, with ``seeds``, one per seed) and return its
    directory and results rows.

    ``hooks``: extra ``TicketHook`` s attached to every ticket (``tune``'s pruner).

    Example::

        recbole_lth.run(model="BPR", dataset="ml-100k", method="imp",
                        config_dict={"epochs": 20, "rounds": 3})
    """
    study = plan_study(model, dataset, method, config_files, config_dict, hooks)
    nproc = launched_processes(model, dataset, method, config_files, config_dict, hooks)
    if nproc:
        return _launch(nproc, model, dataset, method, config_files, config_dict)
    with torch_threads(None if study.parallel else study.settings.get("worker_threads")):
        if study.root is None and not study.parallel:  # one run in this process, as always
            with session(model, dataset, method, config_files, config_dict) as prepared:
                for notice in study.notices:
                    logger.warning(notice)
                _plan_all(prepared, hooks)
                return _finish(prepared)
        return _run_study(study, hooks)


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


def _plan_all(prepared: Run, hooks=()) -> None:
    """Every method's plan, in the order given, on one run."""
    for name in prepared.views:
        _plan_one(prepared, name, hooks)


def _plan_one(prepared: Run, name: str, hooks=()) -> None:
    view = prepared.for_method(name)
    view.ticket_hooks.extend(hooks)
    distill.install(view)  # kd_weight > 0: distil every sparse ticket of this method
    methods.get(name).plan(view)


def _finish(prepared: Run) -> RunResult:
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
    model: object
    dataset: object
    method: object
    config_files: object
    config_dict: dict

    def args(self) -> tuple:
        return self.model, self.dataset, self.method, self.config_files, self.config_dict

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
    return _identity_dir({k: v for k, v in settings.items() if k != "seed"}, "-seeds")


def plan_study(model=None, dataset=None, method=None, config_files=None, config_dict=None, hooks=()) -> Study:
    """The runs a command makes (one per seed) and how they are spread; every
    check that needs no data."""
    settings, views = settings_for(model, dataset, method, config_files, config_dict)
    notices = tuple(parallel.check(settings, hooks))
    tickets = methods.planned_tickets(views) * len(settings.get("seeds") or [None])
    if settings["workers"] > max(1, tickets):  # an idle worker only costs an interpreter (issue 35)
        notices += (f"workers={settings['workers']} for {tickets} ticket(s): {max(1, tickets)} worker(s) start",)
        settings = {**settings, "workers": max(1, tickets)}
    if settings["executor"] == "ray":
        parallel.check_ray_address(settings.get("ray_address"))
    seeds = settings.get("seeds")
    base = _absolute_paths(settings, config_files, config_dict)
    if not seeds:
        run_dir = Path(settings.get("run_dir") or default_run_dir(settings)).resolve()
        _refuse_other_kind(run_dir, study=False)
        return Study(settings, None, (Job(None, model, dataset, method, base["config_files"],
                                          {**base["config_dict"], "run_dir": str(run_dir)}),), notices)
    if "seed" in user_values(config_files, config_dict):
        raise ConfigError("seed", user_values(config_files, config_dict)["seed"],
                          "not set together with seeds (each seed's run sets its own)")
    if settings.get("nproc") is not None:
        raise ConfigError("nproc", settings["nproc"], "nothing with seeds (use workers to run seeds at once)")
    if hooks:
        raise ConfigError("seeds", seeds, "null under tune (each trial is one run at one seed)")
    root = Path(settings.get("run_dir") or default_study_dir(settings)).resolve()
    _refuse_other_kind(root, study=True)
    study_paths = paths.StudyPaths(root)
    jobs = tuple(
        Job(seed, model, dataset, method, base["config_files"],
            {**base["config_dict"], "seeds": None, "seed": seed, "run_dir": str(study_paths.seed_run(seed))})
        for seed in seeds
    )
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


def _absolute_paths(settings: dict, config_files, config_dict) -> dict:
    """The job's files and folders as absolute paths: a worker (a Ray task on
    another node, too) may start in another working directory.  Only
    where-it-runs keys change, so no run's identity does."""
    files = settings.get("config_files") or None
    overrides = dict(config_dict or {})
    if settings.get("data_path"):
        overrides["data_path"] = str(Path(settings["data_path"]).resolve())
    overrides.pop("config_files", None)
    return {"config_files": [str(Path(f).resolve()) for f in files] if files else config_files,
            "config_dict": overrides}


def _run_study(study: Study, hooks=()) -> RunResult:
    """Every check of every run, then the runs: their tickets first by the
    workers (if any), then one pass here that writes the results and reports."""
    checked = [_check_everything(*job.args()) for job in study.jobs]
    with ExitStack() as stack:
        for one in checked:
            stack.enter_context(run_lock(one.run_paths))
        if study.root is not None:
            settings = {k: v for k, v in study.settings.items() if k != "seed"}
            paths.write_json(paths.StudyPaths(study.root).settings, settings)
        runs = [_write(one) for one in checked]
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
                    _plan_all(prepared, hooks)
                    results[job.seed] = _finish(prepared)
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
            args = job.args()[:-1] + ({**job.config_dict, **override, "progress": False},)
            checked = _check_everything(*args)
            for handler in logging.getLogger().handlers:  # the driver's console speaks for the study
                if isinstance(handler, _Console):
                    handler.setLevel(logging.WARNING)
            opened[job.seed] = _new_run(checked)
            opened[job.seed].claims = claims
        return opened[job.seed]

    def run_unit(unit) -> None:
        job, name = unit
        prepared = open_run(job)
        with run_log(prepared.paths.log):
            _plan_one(prepared, name)

    names = methods.names(settings_for(*jobs[0].args())[0]["method"])
    units = [(job, name) for job in jobs for name in names]
    parallel.run_units(parallel.rotated(units, index, workers), run_unit, claims)


def launched_processes(model, dataset, method, config_files, config_dict, hooks=()) -> int | None:
    """``nproc`` when this call should launch that many processes (RecBole's
    key, from the command line, a yaml file or ``config_dict``); None when it
    runs here (no ``nproc``, or this process is already one rank of a launch)."""
    if distributed.active():
        return None
    settings, _ = settings_for(model, dataset, method, config_files, config_dict)
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


def _rank_main(model, dataset, method, config_files, config_dict) -> None:
    run(model, dataset, method, config_files, config_dict)


def _launch(nproc, model, dataset, method, config_files, config_dict) -> RunResult:
    settings, _ = settings_for(model, dataset, method, config_files, config_dict)
    distributed.launch(nproc, _rank_main, (model, dataset, method, config_files, config_dict))
    run_dir = Path(settings.get("run_dir") or default_run_dir(settings))
    return RunResult(run_dir, read_results(run_dir))
