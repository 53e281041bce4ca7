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
redone.  ``tuning.csv`` has one row per trial.
"""
from __future__ import annotations

import ast
import logging
import math
from pathlib import Path
from time import perf_counter

from recbole_lth import api, methods, paths
from recbole_lth.engine import TicketHook
from recbole_lth.errors import ConfigError
from recbole_lth.settings import parse_value

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
    values = {}
    for name, (kind, spec) in space.items():
        if kind == "choice":
            primitive = all(isinstance(v, (bool, int, float, str)) or v is None for v in spec)
            if primitive:
                values[name] = trial.suggest_categorical(name, spec)
            else:  # lists (mlp_hidden_size): choose among their texts
                values[name] = parse_value(trial.suggest_categorical(name, [repr(v) for v in spec]))
        elif kind == "uniform":
            values[name] = trial.suggest_float(name, spec[0], spec[1])
        elif kind == "loguniform":
            values[name] = trial.suggest_float(name, math.exp(spec[0]), math.exp(spec[1]), log=True)
        else:
            low, high, q = spec
            values[name] = trial.suggest_float(name, low, high, step=q)
            if float(values[name]).is_integer() and all(float(x).is_integer() for x in spec):
                values[name] = int(values[name])
    return values


class PruneOnValidation(TicketHook):
    """Reports every validation of a trial's tickets to Optuna (step = the
    count of evaluations so far in the trial) and stops a trial the pruner
    judges hopeless."""

    def __init__(self, trial):
        self.trial, self.step = trial, 0

    def attach(self, run, trainer) -> None:
        import optuna

        real_valid = trainer._valid_epoch

        def reported(valid_data, show_progress=False):
            score, result = real_valid(valid_data, show_progress)
            self.trial.report(float(score), self.step)
            self.step += 1
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at evaluation {self.step}")
            return score, result

        trainer._valid_epoch = reported


def objective_rows(rows: list[dict], method: str, settings: dict) -> list[dict]:
    """The tickets the objective averages: the last round of an iterative
    method, or every target of the others."""
    mine = [r for r in rows if r.get("method") == method]
    if methods.get(method).sparsity_key == "prune_rate":
        return [max(mine, key=lambda r: r.get("round", 0))] if mine else []
    return [r for r in mine if r.get(f"valid_{str(settings['valid_metric']).lower()}") is not None]


def _mean(rows: list[dict], key: str):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def tune(params_file, max_evals: int, model=None, dataset=None, method=None, config_files=None,
         config_dict=None, tune_dir=None) -> Path:
    """Run (or resume) a study of ``max_evals`` trials; returns ``tuning.csv``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    space = read_params_file(params_file)
    if not isinstance(max_evals, int) or isinstance(max_evals, bool) or max_evals < 1:
        raise ConfigError("max_evals", max_evals, "a whole number >= 1")
    config_dict = dict(config_dict or {})
    # Checked with one value of each parameter (an unknown name is a typo).
    example = {name: spec[0] if kind in ("choice", "uniform", "quniform") else math.exp(spec[0])
               for name, (kind, spec) in space.items()}
    settings, views = api.settings_for(model, dataset, method, config_files, {**config_dict, **example})
    if len(views) != 1:
        raise ConfigError("method", settings["method"], "one method per tuning study")
    method_name = next(iter(views))
    where = paths.TunePaths(tune_dir or Path(settings.get("output_root") or "lth_runs") /
                            f"tune-{settings['model']}-{settings['dataset']}-{method_name}")
    where.root.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="recbole_lth", direction="maximize" if settings.get("valid_metric_bigger", True) else "minimize",
        storage=JournalStorage(JournalFileBackend(str(where.study))), load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=int(settings.get("seed", 2020))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    rows = [paths.read_json(where.trial_row(t.number)) for t in done if where.trial_row(t.number).is_file()]
    for _ in range(max_evals - len(done)):
        trial = study.ask()
        values = sample(trial, space)
        run_dir = where.trial_dir(trial.number)
        started = perf_counter()
        row = {"trial": trial.number, **{f"param[{k}]": v for k, v in values.items()}, "run_dir": str(run_dir)}
        try:
            result = api.run(model, dataset, method, config_files, {**config_dict, **values, "run_dir": str(run_dir)},
                             hooks=[PruneOnValidation(trial)])
        except optuna.TrialPruned as pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            row.update(state="pruned", note=str(pruned))
        else:
            chosen = objective_rows(result.rows, method_name, views[method_name])
            metric = f"valid_{str(settings['valid_metric']).lower()}"
            value = _mean(chosen, metric)
            study.tell(trial, value)
            row.update(state="complete", objective=value, tickets=" ".join(r["ticket"] for r in chosen))
            for key in sorted({k for r in chosen for k in r if k.startswith(("valid_", "test_"))}):
                row[key] = _mean(chosen, key)
        row["seconds"] = round(perf_counter() - started, 1)
        paths.write_json(where.trial_row(trial.number), row)
        rows.append(row)
        paths.write_csv(where.results, sorted(rows, key=lambda r: r["trial"]))
    path = paths.write_csv(where.results, sorted(rows, key=lambda r: r["trial"]))
    complete = [r for r in rows if r.get("objective") is not None]
    if complete:
        best = max(complete, key=lambda r: r["objective"])
        logger.info(f"tune: best trial {best['trial']}: {best['objective']:.4f} with "
                    f"{ {k[6:-1]: v for k, v in best.items() if k.startswith('param[')} }")
    return path
