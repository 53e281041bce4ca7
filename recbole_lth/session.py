"""A run directory's session: its identity, every check before it is
written, its lock and its logs.

Everything that can be wrong with the input is checked before the run
directory is written: the settings (``methods.check``), the dataset's files,
and what needs the model (``prune_params`` must select a tensor).  Only then
is ``settings.json`` written, so a refused command leaves nothing behind and
the corrected one runs.
"""
from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from recbole_lth import backbones, methods
from recbole_lth.core import paths
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.settings import declared_defaults, differing_keys, legacy_run_identity, run_identity
from recbole_lth.engine import builder, distributed
from recbole_lth.engine.progress import Progress
from recbole_lth.engine.run import Run
from recbole_lth.request import Request
from recbole_lth.sparse import distill
from recbole_lth.views.popularity import save_popularity

logger = logging.getLogger("recbole_lth")


def plugin_defaults(settings: dict) -> dict:
    """The values these settings' keys take with no user input: RecBole's
    own files for the model and dataset, under the plugin's layers for the
    method(s).  A value given explicitly at its default (``--seed=2020``)
    then names the same run directory as leaving it out."""
    recbole = builder.recbole_values(settings["model"], settings["dataset"]) if settings.get("model") else {}
    return {**recbole, **declared_defaults(settings["method"], methods.properties_files, settings.get("model"))}


def identity_dir(settings: dict, suffix: str = "") -> Path:
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
    return identity_dir(settings)


def _refused(run_paths: paths.RunPaths, allowed: str) -> ConfigError:
    """The refusal of this run directory, saying what ``run_dir`` may be."""
    return ConfigError("run_dir", str(run_paths.root), allowed)


def _refuse_orphaned_tickets(run_paths: paths.RunPaths, missing: Path, what: str) -> None:
    """Finished tickets whose run directory lost ``missing`` cannot be matched
    to these settings or data: reusing them would report another run's metrics."""
    if run_paths.stored_tickets():
        raise _refused(run_paths, f"a new folder, or this one with its {missing.name} restored: it holds finished "
                                  f"tickets but no {missing.name}, so nothing says which {what} trained them (they "
                                  f"are left untouched)")


def _check_run_dir(run_paths: paths.RunPaths, settings: dict) -> None:
    """A run directory resumes only the run it was started with."""
    if not run_paths.settings.exists():
        _refuse_orphaned_tickets(run_paths, run_paths.settings, "settings")
        return
    try:
        stored = paths.read_json(run_paths.settings)
    except ValueError as err:
        raise _refused(run_paths, f"a folder whose settings.json can be read (it is damaged: {err}); restore it, "
                                  f"or use a new run_dir (the finished tickets there are left untouched)") from err
    differing = differing_keys(stored, settings, plugin_defaults(settings))
    if differing:
        raise _refused(run_paths, f"a new folder, or this one with the settings it was started with (these "
                                  f"differ: {', '.join(differing)}); finished tickets there are left untouched")


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
class Checked:
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


def check_everything(request: Request) -> Checked:
    """Every check, including those that need the data and the model (built
    on the data, never trained), before the run directory is touched."""
    settings, views = request.settings()
    console_logging(settings.get("state"))
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
    return Checked(settings, views, run_paths, config, dataset_obj, (train_data, valid_data, test_data),
                   model_obj, prunable, fingerprint, notices)


def write_run(checked: Checked) -> Run:
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
    run = new_run(checked)
    run.init_state()  # saved before the first step, reloaded for every rewind
    return run


def new_run(checked: Checked) -> Run:
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
    checked = check_everything(Request(model, dataset, method, config_files, config_dict))
    with run_lock(checked.run_paths):
        return write_run(checked)


class Console(logging.StreamHandler):
    """The one console handler the plugin adds (once per process)."""


def console_logging(state: str | None) -> None:
    import colorlog

    root = logging.getLogger()
    root.setLevel(getattr(logging, str(state or "INFO").upper(), logging.INFO))
    if not any(isinstance(h, Console) for h in root.handlers):
        console = Console()
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
def _rank_directory(checked: Checked):
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
def session(request: Request):
    """A prepared ``Run`` holding its directory's lock, with ``run.log`` open,
    for the duration."""
    checked = check_everything(request)
    with _rank_directory(checked), run_lock(checked.run_paths):
        run = write_run(checked)
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
