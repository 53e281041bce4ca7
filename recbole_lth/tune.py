"""Tuning the RecBole way: a params file, one search per trial.

``run_recbole_lth.py tune --params_file=FILE --max_evals=N [search keys]``
reads RecBole's params-file format (``run_hyper.py``'s)::

    learning_rate loguniform -8,0        # exp(U(-8, 0)), as hyperopt's loguniform
    embedding_size choice [32,64,128]
    dsl_init_ratio uniform 0.3,0.5
    kd_topk quniform 5,20,5

and runs one search (``recbole_lth.run``) per trial, each in its own run
directory under the tuning directory.  The objective is the valid metric of
the method's ticket(s) at the requested sparsity: the last round of
``imp``/``wr``, or the mean over ``target_sparsities``.  The engine is Optuna
(TPE, as RecBole's hyperopt-based ``HyperTuning``): its median pruner stops a
poor trial from the validation metric of every evaluated epoch, and its
journal file (``study.log``) resumes a study, so finished trials are not
redone: a trial a killed process left running is marked failed and its
values are tried again, and a trial whose loss became NaN is a failed row
(the study goes on).  ``tune.lock`` keeps a second process out of the
tuning directory, and every value of every range is checked before the
first trial.  ``tuning.csv`` has one row per trial.
"""
from __future__ import annotations

import ast
import logging
import math
from pathlib import Path
from time import perf_counter

from recbole_lth import api, methods
from recbole_lth.core import paths
from recbole_lth.core.errors import ConfigError, TrainingDiverged
from recbole_lth.core.settings import parse_value
from recbole_lth.engine import parallel
from recbole_lth.engine.run import TicketHook
from recbole_lth.request import Request

logger = logging.getLogger("recbole_lth")

KINDS = ("choice", "uniform", "quniform", "loguniform")
PARAMS_ALLOWED = ("lines 'NAME choice [a,b,...]', 'NAME uniform low,high', 'NAME quniform low,high,q' or "
                  "'NAME loguniform low,high' (natural-log bounds), as RecBole's run_hyper.py reads them")


def read_params_file(path) -> dict[str, tuple]:
    """``{name: (kind, values)}`` of a RecBole params file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("params_file", str(path), f"an existing file of {PARAMS_ALLOWED}")
    space = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            name, kind, text = parts[0], parts[1], "".join(parts[2:])
            if kind == "choice":
                values = ast.literal_eval(text)
                assert isinstance(values, (list, tuple)) and values
                space[name] = ("choice", list(values))
            elif kind in ("uniform", "loguniform", "quniform"):
                numbers = [float(x) for x in text.split(",")]
                assert len(numbers) == (3 if kind == "quniform" else 2) and numbers[0] < numbers[1]
                space[name] = (kind, numbers)
            else:
                raise ValueError(kind)
        except (IndexError, ValueError, SyntaxError, AssertionError):
            raise ConfigError("params_file", f"{path}:{number}: {line}", PARAMS_ALLOWED) from None
    if not space:
        raise ConfigError("params_file", str(path), f"at least one of {PARAMS_ALLOWED}")
    return space


def sample(trial, space: dict) -> dict:
    """One trial's values (Optuna's suggestions, in the params file's terms)."""
    suggested = {}
    for name, (kind, spec) in space.items():
        if kind == "choice":
            # lists (mlp_hidden_size): Optuna chooses among their texts
            suggested[name] = trial.suggest_categorical(name, spec if _primitive(spec) else [repr(v) for v in spec])
        elif kind == "uniform":
            suggested[name] = trial.suggest_float(name, spec[0], spec[1])
        elif kind == "loguniform":
            suggested[name] = trial.suggest_float(name, math.exp(spec[0]), math.exp(spec[1]), log=True)
        else:
            suggested[name] = trial.suggest_float(name, spec[0], spec[1], step=spec[2])
    return in_file_terms(space, suggested)


def _primitive(values: list) -> bool:
    return all(isinstance(v, (bool, int, float, str)) or v is None for v in values)


def in_file_terms(space: dict, params: dict) -> dict:
    """Optuna's stored parameters as the params file states them (a list
    choice parsed back from its text, a whole quniform as an int)."""
    values = {}
    for name, value in params.items():
        kind, spec = space.get(name, ("uniform", None))
        if kind == "choice" and not _primitive(spec):
            value = parse_value(value)
        elif kind == "quniform" and float(value).is_integer() and all(float(x).is_integer() for x in spec):
            value = int(value)
        values[name] = value
    return values


def range_values(kind: str, spec: list) -> list:
    """The values of a range the checks must see: every choice, and both ends
    of an interval (every declared check of a number is an interval)."""
    if kind == "choice":
        return list(spec)
    if kind == "loguniform":
        return [math.exp(spec[0]), math.exp(spec[1])]
    if kind == "quniform":
        low, high, q = spec
        top = low + q * math.floor((high - low) / q + 1e-9)
        return [in_file_terms({"v": (kind, spec)}, {"v": v})["v"] for v in (low, top)]
    return [spec[0], spec[1]]


def check_space(space: dict, request: Request) -> tuple[dict, dict]:
    """Every value of every range checked before the first trial (each with
    the other parameters at their first value); the settings and views at
    those first values."""
    first = {name: range_values(kind, spec)[0] for name, (kind, spec) in space.items()}
    settings, views = request.with_overrides(**first).settings()
    _check_one_process(settings)
    for name, (kind, spec) in space.items():
        for value in range_values(kind, spec)[1:]:
            _check_one_process(request.with_overrides(**{**first, name: value}).settings()[0])
    return settings, views


def _check_one_process(settings: dict) -> None:
    """What a trial's run would refuse because trials run in one process,
    refused before the study's files are written (a refusal in trial 0 left
    trial 0 RUNNING in study.log, and a params file with ``workers choice
    [1,2]`` trained trial 0 first)."""
    parallel.check(settings, hooks=(PruneOnValidation,))
    if settings.get("seeds"):
        raise ConfigError("seeds", settings["seeds"], "null under tune (each trial is one run at one seed)")
    if settings.get("nproc") is not None:
        raise ConfigError("nproc", settings["nproc"], "nothing: tune runs its trials in one process")


class PruneOnValidation(TicketHook):
    """Reports every validation of a trial's tickets to Optuna (step = the
    count of evaluations so far in the trial) and stops a trial the pruner
    judges hopeless."""

    def __init__(self, trial):
        self.trial, self.step = trial, 0

    def validated(self, trainer, epoch_idx, score) -> None:
        import optuna

        self.trial.report(float(score), self.step)
        self.step += 1
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {self.step}")


def objective_rows(rows: list[dict], method: str, settings: dict) -> list[dict]:
    """The tickets the objective averages: the last round of an iterative
    method, or every target of the others."""
    mine = [r for r in rows if r.get("method") == method]
    if methods.get(method).iterative:
        return [max(mine, key=lambda r: r.get("round", 0))] if mine else []
    return [r for r in mine if r.get(f"valid_{str(settings['valid_metric']).lower()}") is not None]


def _mean(rows: list[dict], key: str):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def _tell(study, number: int, row: dict) -> None:
    """Tell Optuna the outcome a trial's row records (interrupted: failed)."""
    from optuna.trial import TrialState

    if row["state"] == "complete":
        study.tell(number, row["objective"])
    else:
        study.tell(number, state=TrialState.PRUNED if row["state"] == "pruned" else TrialState.FAIL)


def _resume(study, where: paths.TunePaths, space: dict) -> list[dict]:
    """The rows of the study's trials so far.  A trial left RUNNING by a
    process that died is marked failed (its row: ``interrupted``) and its
    values are enqueued, so the next trial tries them again; one that had
    written its row before the process died is told that row's outcome."""
    from optuna.trial import TrialState

    rows = []
    for trial in study.trials:
        row_path = where.trial_row(trial.number)
        row = paths.read_json(row_path) if row_path.is_file() else None
        if trial.state == TrialState.RUNNING:
            if row is None:
                drawn = set(trial.params) == set(space)
                if drawn:
                    study.enqueue_trial(trial.params)
                # else killed between two draws: the next trial's sampler, seeded as
                # this one's was, draws all of them again as the uninterrupted study did
                params = in_file_terms(space, trial.params)
                row = {"trial": trial.number, **{f"param[{k}]": v for k, v in params.items()},
                       "run_dir": str(where.trial_dir(trial.number)), "state": "interrupted",
                       "note": "the process ended during this trial; " + (
                           "its values are tried again in the next trial" if drawn else
                           "it ended between two draws, so the next trial draws every value again")}
                paths.write_json(row_path, row)
            _tell(study, trial.number, row)
        if row is not None:
            rows.append(row)
    return rows


def _evaluated(rows: list[dict]) -> int:
    """Trials that count towards max_evals: all but the interrupted ones."""
    return sum(r["state"] != "interrupted" for r in rows)


def tune(params_file, max_evals: int, request: Request, tune_dir=None) -> Path:
    """Run (or resume) a study of ``max_evals`` trials; returns ``tuning.csv``.

    Resuming continues the same study: the sampler of trial k (k trials
    evaluated before it: complete, pruned or failed) is seeded with seed + k,
    so a resumed study samples what the uninterrupted one did.  What differs
    after an interruption: the interrupted trial stays in ``tuning.csv`` as
    ``interrupted`` (failed in Optuna, not counted) and the next trial
    number retries its values in a run directory of its own, so every later
    trial's number is one higher."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if params_file is None:
        raise ConfigError("params_file", None, f"--params_file=FILE, a file of {PARAMS_ALLOWED}")
    space = read_params_file(params_file)
    if not isinstance(max_evals, int) or isinstance(max_evals, bool) or max_evals < 1:
        raise ConfigError("max_evals", max_evals, "a whole number >= 1")
    request = request.with_overrides()  # overrides as a dict of their own
    settings, views = check_space(space, request)
    if len(views) != 1:
        raise ConfigError("method", settings["method"], "one method per tuning study")
    method_name = next(iter(views))
    where = paths.TunePaths(tune_dir or Path(settings.get("output_root") or "lth_runs") /
                            f"tune-{settings['model']}-{settings['dataset']}-{method_name}")
    seed = int(settings.get("seed", 2020))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with api.directory_lock(where.root, where.lock, "tune_dir"):
        study = optuna.create_study(
            study_name="recbole_lth", direction="maximize" if settings.get("valid_metric_bigger", True) else "minimize",
            storage=JournalStorage(JournalFileBackend(str(where.study))), load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )
        rows = _resume(study, where, space)
        while _evaluated(rows) < max_evals:
            study.sampler = optuna.samplers.TPESampler(seed=seed + _evaluated(rows))
            rows.append(_trial(study, space, where, method_name, settings, views[method_name], request))
            paths.write_csv(where.results, sorted(rows, key=lambda r: r["trial"]))
        path = paths.write_csv(where.results, sorted(rows, key=lambda r: r["trial"]))
    complete = [r for r in rows if r.get("state") == "complete"]
    if complete:
        best = max(complete, key=lambda r: r["objective"])
        logger.info(f"tune: best trial {best['trial']}: {best['objective']:.4f} with "
                    f"{ {k[6:-1]: v for k, v in best.items() if k.startswith('param[')} }")
    return path


def _trial(study, space, where, method_name, settings, view, request: Request) -> dict:
    """One trial: its search, its row (written before Optuna is told)."""
    import optuna

    trial = study.ask()
    values = sample(trial, space)
    run_dir = where.trial_dir(trial.number)
    started = perf_counter()
    row = {"trial": trial.number, **{f"param[{k}]": v for k, v in values.items()}, "run_dir": str(run_dir)}
    try:
        result = api.run_request(request.with_overrides(**values, run_dir=str(run_dir)),
                                 hooks=[PruneOnValidation(trial)])
    except optuna.TrialPruned as pruned:
        row.update(state="pruned", note=str(pruned))
    except TrainingDiverged as err:  # recorded as failed; the study goes on
        row.update(state="failed", note=str(err))
    else:
        chosen = objective_rows(result.rows, method_name, view)
        value = _mean(chosen, f"valid_{str(settings['valid_metric']).lower()}")
        if value is None or not math.isfinite(value):
            row.update(state="failed", note=f"the objective is not a number ({value}): no valid metric of "
                                            f"{' '.join(r['ticket'] for r in chosen) or 'any ticket'}")
        else:
            row.update(state="complete", objective=value, tickets=" ".join(r["ticket"] for r in chosen))
            for key in sorted({k for r in chosen for k in r if k.startswith(("valid_", "test_"))}):
                row[key] = _mean(chosen, key)
    row["seconds"] = round(perf_counter() - started, 1)
    paths.write_json(where.trial_row(trial.number), row)
    _tell(study, trial.number, row)
    return row
