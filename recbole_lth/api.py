"""``recbole_lth.run``: settings -> checks -> RecBole data/model -> method.

Only ``recbole.config``, ``recbole.data`` and ``recbole.utils`` are used
(never ``recbole.quick_start``, which imports ray), so the plugin also runs
where RecBole is installed with ``--no-deps``.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from recbole_lth import checkpoint, distill
from recbole_lth.config import (
    VOLATILE_KEYS, check_settings, default_run_dir, merge_settings, resolve_data_path,
)
from recbole_lth.errors import ConfigError
from recbole_lth.masking import select_prunable
from recbole_lth.report import save_popularity, write_report_logged

logger = logging.getLogger("recbole_lth")


@dataclass
class RunResult:
    run_dir: Path
    rows: list

    @property
    def results_csv(self) -> Path:
        return self.run_dir / "results.csv"


@contextmanager
def _argv_isolated():
    """RecBole's Config also parses ``sys.argv``; the API passes everything
    explicitly, so hide the caller's argv (pytest's, a notebook's, ...)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _setup_logging(run_dir: Path, state: str | None) -> logging.Handler:
    import colorlog

    level = getattr(logging, str(state or "INFO").upper(), logging.INFO)
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_recbole_lth_console", False) for h in root.handlers):
        console = logging.StreamHandler()
        console.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)-15s %(levelname)s  %(message)s", "%d %b %H:%M"))
        console._recbole_lth_console = True
        root.addHandler(console)
    file_handler = logging.FileHandler(run_dir / "run.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s"))
    root.addHandler(file_handler)
    return file_handler


def _check_run_dir(run_dir: Path, settings: dict) -> None:
    stored_path = run_dir / "settings.json"
    if stored_path.exists():
        stored = checkpoint.read_json(stored_path)
        keys = (set(stored) | set(settings)) - VOLATILE_KEYS
        differing = sorted(k for k in keys if stored.get(k) != settings.get(k))
        if differing:
            raise ConfigError(
                "run_dir", str(run_dir),
                f"a new folder, or this one with the settings it was started with "
                f"(these differ: {', '.join(differing)}); finished tickets there are left untouched",
            )
    else:
        checkpoint.write_json(stored_path, settings)


def _plain_config(config) -> dict:
    plain = {}
    for key, value in config.final_config_dict.items():
        try:
            yaml.safe_dump(value)
            plain[key] = value
        except yaml.representer.RepresenterError:
            plain[key] = str(value)
    return plain


def prepare(model=None, dataset=None, method=None, config_files=None, config_dict=None):
    """Everything up to the first training step; returns a ready ``Run``."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    from recbole_lth.search import Run

    settings = merge_settings(model, dataset, method, config_files, config_dict)
    check_settings(settings)
    settings["data_path"] = resolve_data_path(settings)
    run_dir = Path(settings.get("run_dir") or default_run_dir(settings))
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_run_dir(run_dir, settings)
    handler = _setup_logging(run_dir, settings.get("state"))

    recbole_dict = {k: v for k, v in settings.items() if k not in ("model", "dataset", "config_files")}
    recbole_dict.setdefault("checkpoint_dir", str(run_dir))
    with _argv_isolated():
        config = Config(model=settings["model"], dataset=settings["dataset"], config_dict=recbole_dict)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(_plain_config(config), sort_keys=True))

    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    logger.info(str(data))
    train_data, valid_data, test_data = data_preparation(config, data)
    save_popularity(run_dir, train_data.dataset)  # training-split counts for the report
    init_seed(config["seed"], config["reproducibility"])
    model_obj = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    prunable = select_prunable(model_obj, settings["prune_params"])
    logger.info(
        "prunable tensors (%s, scope %s): %s", settings["prune_params"], settings["prune_scope"],
        {n: tuple(p.shape) for n, p in prunable.items()},
    )
    run = Run(settings, config, train_data, valid_data, test_data, model_obj, run_dir, prunable)
    run.init_state()  # saved before the first step, reloaded for every rewind
    run._log_handler = handler
    return run


def run(model=None, dataset=None, method=None, config_files=None, config_dict=None) -> RunResult:
    """Run one search and return its run directory and results rows.

    Example::

        recbole_lth.run(model="BPR", dataset="ml-100k", method="imp",
                        config_dict={"epochs": 20, "rounds": 3})
    """
    from recbole_lth.methods import METHODS

    prepared = prepare(model, dataset, method, config_files, config_dict)
    try:
        logger.info(f"run directory: {prepared.run_dir}")
        distill.install(prepared)  # kd_weight > 0: distil every sparse ticket of any method
        METHODS[prepared.settings["method"]](prepared)
        logger.info(f"results: {prepared.run_dir / 'results.csv'}")
        write_report_logged(prepared.run_dir, prepared.model)  # a failure is a warning; results are on disk
        return RunResult(prepared.run_dir, prepared.rows)
    finally:
        logging.getLogger().removeHandler(prepared._log_handler)
        prepared._log_handler.close()
