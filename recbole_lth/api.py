"""``recbole_lth.run``: request -> study -> session(s) -> methods' plans.

The entry layer, one job per module:

* ``request.py``: the ``Request`` (model, dataset, method(s), config files,
  overrides), made here once, its settings merged and checked once;
* ``session.py``: a run directory's session: its identity, every check
  before it is written (settings, data, model), its lock and its logs;
* ``study.py``: the runs a command makes (seeds), how they are spread
  (``workers``, Ray, ``--nproc`` ranks) and the methods' plans on each;
* this module: :func:`run`, and the public names of the three above.
"""
from __future__ import annotations

import logging

from recbole_lth.request import Request, settings_for
from recbole_lth.session import (
    default_run_dir, directory_lock, plugin_defaults, prepare, run_lock, run_log, session,
)
from recbole_lth.study import (
    Job, RunResult, Study, default_study_dir, finish, launch, launched_processes, plan_all, plan_study, run_study,
    torch_threads,
)

__all__ = ["Job", "Request", "RunResult", "Study", "default_run_dir", "default_study_dir", "directory_lock",
           "launched_processes", "plan_study", "plugin_defaults", "prepare", "run", "run_lock", "run_log",
           "run_request", "session", "settings_for", "torch_threads"]

logger = logging.getLogger("recbole_lth")


def run(model=None, dataset=None, method=None, config_files=None, config_dict=None, hooks=()) -> RunResult:
    """Run one search (or, with ``seeds``, one per seed) and return its
    directory and results rows.

    ``hooks``: extra ``TicketHook`` s attached to every ticket (``tune``'s pruner).

    Example::

        recbole_lth.run(model="BPR", dataset="ml-100k", method="imp",
                        config_dict={"epochs": 20, "rounds": 3})
    """
    return run_request(Request(model, dataset, method, config_files, config_dict), hooks)


def run_request(request: Request, hooks=()) -> RunResult:
    """:func:`run` of a made ``Request``."""
    study = plan_study(request, hooks)
    nproc = launched_processes(request, hooks)
    if nproc:
        return launch(nproc, request, _rank_main)
    with torch_threads(None if study.parallel else study.settings.get("worker_threads")):
        if study.root is None and not study.parallel:  # one run in this process, as always
            with session(request) as prepared:
                for notice in study.notices:
                    logger.warning(notice)
                plan_all(prepared, hooks)
                return finish(prepared)
        return run_study(study, hooks)


def _rank_main(request: Request) -> None:
    """One rank of a ``--nproc`` launch: the same run, in this process."""
    run_request(request)
