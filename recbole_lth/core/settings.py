"""Settings: RecBole-style layering of yaml properties, and the declared keys.

Priority, lowest first (as in RecBole): RecBole's own model/dataset defaults
< ``properties/overall.yaml`` < ``properties/<method>.yaml`` (a variant's
base method first) < the user's ``config_files`` < ``--key=value`` /
``config_dict``.

Every plugin key is *declared* once, as a :class:`Key`: its check, the text
naming its allowed values and its help line come from that one declaration;
its default comes from the yaml file that sets it.  Nothing here imports
RecBole or a method: the method registry hands the keys it declares to
:func:`check_keys`.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import yaml

from recbole_lth.core import tasks
from recbole_lth.core.errors import ConfigError, UnknownKey
from recbole_lth.core.masking import PRUNE_SCOPES, PRUNE_TARGETS
from recbole_lth.core.optim import is_sparse_learner

# Keys that change how a run is shown or where it runs, not what it computes:
# they are left out of the run's identity, so changing them resumes a run.
VOLATILE_KEYS = frozenset({
    "state", "show_progress", "gpu_id", "use_gpu", "worker", "run_dir",
    "output_root", "checkpoint_dir", "log_wandb", "wandb_project", "config_files",
    "data_path", "eval_batch_size", "eval_memory_mb", "progress",
    # RecBole's distributed keys: how many processes ran it, not what it computes
    "nproc", "world_size", "ip", "port", "offset",
    # How a study is spread (seeds, workers, executor): each seed's run holds
    # its own seed, and a ticket is the same whoever trains it.
    "seeds", "workers", "worker_threads", "executor", "ray_address",
})


def properties_dir() -> Path:
    """``properties/``: inside the installed package (a wheel ships it there),
    or at the top of the checkout (an editable install)."""
    here = Path(__file__).resolve().parent.parent  # the package folder (this is core/settings.py)
    packaged = here / "properties"
    return packaged if packaged.is_dir() else here.parent / "properties"


# ------------------------------------------------------------------ values
def is_number(x) -> bool:
    """A real, finite number (bools are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# YAML 1.1 (PyYAML) reads "1e-3" and "2E5" as strings; RecBole's own loader
# reads them as floats, and so do we.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value):
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def parse_value(text: str):
    """``--key=value`` values, parsed like yaml (numbers, lists, null, bools)."""
    try:
        return _numbers(yaml.safe_load(text))
    except yaml.YAMLError:
        return text


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config_files", str(path), "paths of existing yaml files")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("config_files", str(path), f"yaml files that parse ({err})".replace("\n", " ")) from err
    if not isinstance(loaded, dict):
        raise ConfigError("config_files", str(path), "yaml files holding a mapping of key: value")
    return _numbers(loaded)


# -------------------------------------------------------------------- keys
@dataclass(frozen=True)
class Key:
    """One plugin key: what it means, which values it allows, and the check."""

    name: str
    help: str
    allowed: str
    valid: Callable[[object], bool]

    def check(self, settings: dict) -> None:
        if self.name in settings and not self.valid(settings[self.name]):
            raise ConfigError(self.name, settings[self.name], self.allowed)


def _interval(low, high, low_open, high_open) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def number_key(name, help, low=None, high=None, *, low_open=False, high_open=False,
               whole=False, nullable=False) -> Key:
    """A number (``whole``: a whole number) in a range, or null when ``nullable``."""
    def valid(x):
        if x is None:
            return nullable
        if not (is_whole(x) if whole else is_number(x)):
            return False
        if low is not None and (x <= low if low_open else x < low):
            return False
        return not (high is not None and (x >= high if high_open else x > high))

    kind = "a whole number" if whole else "a number"
    if low is not None and high is not None:
        text = f"{kind} in {_interval(low, high, low_open, high_open)}"
    elif low is not None:
        text = f"{kind} {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        text = f"{kind} {'<' if high_open else '<='} {high:g}"
    else:
        text = kind
    return Key(name, help, text + (" or null" if nullable else ""), valid)


def sparsity_key(name, help, nullable=False) -> Key:
    return number_key(name, help, 0.0, 1.0, high_open=True, nullable=nullable)


def choice_key(name, help, choices: Iterable[str]) -> Key:
    choices = tuple(choices)
    return Key(name, help, ", ".join(map(str, choices)), lambda x: x in choices)


def bool_key(name, help) -> Key:
    return Key(name, help, "True or False", lambda x: isinstance(x, bool))


def text_key(name, help, nullable=True) -> Key:
    return Key(name, help, "a text" + (" or null" if nullable else ""),
               lambda x: (x is None and nullable) or (isinstance(x, str) and x != ""))


def check_keys(settings: dict, keys: Iterable[Key]) -> None:
    for key in keys:
        key.check(settings)


# numpy's seeds are 32-bit: RecBole's init_seed fails on anything else, late and
# blaming the dataset.
SEED_LIMIT = 2 ** 32


# The keys every run has (methods and distillation declare their own).
COMMON_KEYS = (
    Key("prune_params",
        "which tensors are prunable: every embedding table (and item-sized Linear), the same without a CTR "
        "model's first-order (linear) tables, every weight, or fnmatch patterns over parameter names",
        f"{', '.join(PRUNE_TARGETS)} or a non-empty list of parameter-name patterns",
        lambda x: x in PRUNE_TARGETS or (isinstance(x, list) and bool(x) and all(isinstance(p, str) for p in x))),
    choice_key("prune_scope", "global: rank all prunable tensors together (LTH-MRS); per_table: each its own count; "
               "per_field: each field of a CTR token table its own count (other tables per table)",
               PRUNE_SCOPES),
    number_key("prune_rate", "IMP/WR: fraction of the surviving weights pruned per round", 0.0, 1.0,
               low_open=True, high_open=True),
    number_key("rounds", "IMP/WR: pruning rounds after the dense round", 0, whole=True, nullable=True),
    sparsity_key("target_sparsity", "IMP/WR: also stop once this sparsity is reached", nullable=True),
    Key("target_sparsities", "one ticket per sparsity (omp, rp, dsl, pep, snip, baselines); imp: the "
        "sparsities IMP's rounds reach (1-(1-prune_rate)^r)",
        "a non-empty list of distinct numbers in [0, 1), or imp",
        lambda x: x == "imp" or (isinstance(x, list) and bool(x) and all(is_number(v) and 0 <= v < 1 for v in x)
                                 and len({float(v) for v in x}) == len(x))),
    Key("rewind_epoch", "0: rewind survivors to the initial weights; k: to the weights after epoch k",
        "a whole number in [0, epochs)", lambda x: is_whole(x) and x >= 0),
    Key("dense_weight_decays", "train the dense ticket at each of these weight_decay values; the best on "
        "validation is the dense reference, rewind source and teacher (null: one dense ticket at weight_decay)",
        "null or a non-empty list of distinct numbers >= 0",
        lambda x: x is None or (isinstance(x, list) and bool(x) and all(is_number(v) and v >= 0 for v in x)
                                and len({float(v) for v in x}) == len(x))),
    number_key("eval_memory_mb", "memory budget (MB) of a full-sort evaluation batch's scores; RecBole's "
               "eval_batch_size, when set, wins", 0, low_open=True),
    bool_key("progress", "a ticket-level progress bar and one line per finished ticket on the console (RecBole's "
             "per-epoch bars: show_progress)"),
    bool_key("fused_optimizer", "build RecBole's adam/adamw/sgd/adagrad as torch's fused kernel (same algorithm)"),
    bool_key("fast_propagation", "LightGCN propagates over its bipartite adjacency's two halves in CSR, built "
             "once (the same model, float rounding aside); False: RecBole's own forward"),
    Key("seeds", "run the whole study once per RecBole seed (one run directory each, in one study folder with "
        "summary.csv/.md/.tex: mean, std, paired CI and t test against each seed's dense ticket); null: one run "
        "at RecBole's seed", "null or a non-empty list of distinct whole numbers in [0, 2**32)",
        lambda x: x is None or (isinstance(x, list) and bool(x) and all(is_whole(v) and 0 <= v < SEED_LIMIT for v in x)
                                and len(set(x)) == len(x))),
    number_key("workers", "independent tickets (seeds, methods, targets) trained at once in this many worker "
               "processes (or Ray tasks); 1: one after another in this process", 1, whole=True),
    number_key("worker_threads", "torch threads per worker; null: the cores divided by workers (workers 1: "
               "torch's default)", 1, whole=True, nullable=True),
    choice_key("executor", "local: worker processes on this machine; ray: Ray tasks (ray_address's cluster, "
               "the run directory on a shared filesystem)", ("local", "ray")),
    text_key("ray_address", "executor ray: the cluster's address (host:port or auto); null: start a local Ray "
             "instance"),
    text_key("output_root", "parent of the default run directory", nullable=False),
    text_key("run_dir", "the run directory; null: <output_root>/<model>-<dataset>-<method>-<settings hash>"),
)


def _whole_list(x) -> bool:
    return isinstance(x, list) and bool(x) and all(is_whole(v) and v >= 1 for v in x)


LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam", "rowwise_adagrad")


# RecBole's own keys whose impossible values RecBole accepts silently or fails
# on late (after training started): checked before anything runs.
RECBOLE_KEYS = (
    number_key("learning_rate", "RecBole: the learner's step size", 0, low_open=True),
    number_key("train_batch_size", "RecBole: training batch size", 1, whole=True),
    number_key("eval_batch_size", "RecBole: full-sort batch (users x items entries); null: sized from "
               "eval_memory_mb", 1, whole=True, nullable=True),
    number_key("embedding_size", "RecBole: embedding width", 1, whole=True),
    number_key("mf_embedding_size", "RecBole NeuMF: GMF embedding width", 1, whole=True),
    number_key("mlp_embedding_size", "RecBole NeuMF: MLP embedding width", 1, whole=True),
    Key("mlp_hidden_size", "RecBole: hidden layer widths", "a non-empty list of whole numbers >= 1", _whole_list),
    Key("topk", "RecBole: the K of the ranking metrics", "a whole number >= 1 or a non-empty list of them",
        lambda x: (is_whole(x) and x >= 1) or _whole_list(x)),
    number_key("stopping_step", "RecBole: evaluations without improvement before early stopping", 0, whole=True),
    number_key("eval_step", "RecBole: epochs between validations (selection on validation needs >= 1)", 1,
               whole=True),
    number_key("weight_decay", "RecBole: L2 of the learner", 0),
    Key("seed", "RecBole: the random seed", "a whole number in [0, 2**32)", lambda x: is_whole(x) and 0 <= x < SEED_LIMIT),
    # RecBole trains an unknown learner as Adam with one warning: refused here.
    Key("learner", "RecBole: the optimizer (sparse_adam: tables read row by row with sparse gradients, "
        "lazy Adam on the rows a batch looked up, Adam elsewhere; rowwise_adagrad: FBGEMM's row-wise Adagrad "
        "on those rows, Adagrad elsewhere)", f"one of {', '.join(LEARNERS)}",
        lambda x: isinstance(x, str) and x.lower() in LEARNERS),
)


def check_valid_metric(settings: dict) -> None:
    """``valid_metric`` must be one of ``metrics`` at one of ``topk`` (RecBole
    finds out only after the first training epoch)."""
    metric = settings.get("valid_metric")
    if metric is None:
        return
    metrics = settings.get("metrics") or []
    metrics = [metrics] if isinstance(metrics, str) else metrics
    topk = settings.get("topk") or []
    topk = [topk] if is_whole(topk) else topk
    names = [str(m).lower() for m in metrics]
    allowed = ", ".join(f"{m}@{k}" for m in metrics for k in topk) or "a metric of `metrics`"
    name, _, k = str(metric).partition("@")
    if name.lower() not in names or (k and (not k.isdigit() or int(k) not in topk)):
        raise ConfigError("valid_metric", metric, allowed)


def check_learner(settings: dict) -> None:
    """``sparse_adam``'s row-sparse gradients have no norm in torch, so RecBole's
    ``clip_grad_norm`` would stop the first step."""
    if is_sparse_learner(settings.get("learner", "")) and settings.get("clip_grad_norm"):
        dense = [name for name in LEARNERS if not is_sparse_learner(name)]
        raise ConfigError("learner", settings["learner"], f"one of {', '.join(dense)} with clip_grad_norm "
                          f"(torch has no norm of the row-sparse gradients {settings['learner']} reads), "
                          "or clip_grad_norm: ~")


def check_dataset(settings: dict) -> None:
    """(The model is checked by :func:`recbole_lth.backbones.check_model`.)"""
    if not settings.get("dataset") or not isinstance(settings.get("dataset"), str):
        raise ConfigError("dataset", settings.get("dataset"), "a dataset name under data_path (e.g. ml-100k)")


def check_common(settings: dict) -> None:
    """The common keys, and the RecBole keys the plugin relies on."""
    check_dataset(settings)
    check_keys(settings, COMMON_KEYS)
    check_keys(settings, RECBOLE_KEYS)
    check_valid_metric(settings)
    check_learner(settings)
    tasks.check_settings(settings)
    epochs = settings.get("epochs")
    if not is_whole(epochs) or epochs < 1:
        raise ConfigError("epochs", epochs, "a whole number >= 1")
    rewind = settings.get("rewind_epoch", 0)
    if rewind >= epochs:
        raise ConfigError("rewind_epoch", rewind, f"a whole number in [0, epochs) = [0, {epochs})")
    if rewind and settings.get("dense_weight_decays"):
        raise ConfigError("rewind_epoch", rewind, "0 with dense_weight_decays (late rewinding would need the "
                          "state of a dense ticket not chosen yet)")


# ------------------------------------------------------------------ layers
def merge_settings(model=None, dataset=None, method=None, config_files=None, config_dict=None,
                   method_files: Callable[[str], list[str]] | None = None) -> dict:
    """Merge the layers into one plain dict (no RecBole objects).

    ``method_files(name)``: the properties files of a method, lowest first
    (a variant's base before its own); default ``[<name>.yaml]``.
    """
    overrides = _numbers(dict(config_dict or {}))
    for key, value in (("model", model), ("dataset", dataset), ("method", method)):
        if value is not None:
            overrides[key] = value
    files = config_files if config_files is not None else overrides.get("config_files")
    overrides.pop("config_files", None)
    if isinstance(files, str):
        files = files.split()
    files = list(files or [])

    props = properties_dir()
    settings = read_yaml(props / "overall.yaml")
    user_layers = [read_yaml(f) for f in files] + [overrides]
    chosen, model_name = settings.get("method"), None
    for layer in user_layers:
        chosen = layer.get("method", chosen)
        model_name = layer.get("model", model_name)
    # The model's task (sequential, context-aware) sets its evaluation keys
    # above overall.yaml's full-sort defaults and below everything else.
    for name in tasks.properties_files(model_name):
        settings.update(read_yaml(props / name))
    # A study (a list of methods) reads every method's file; each method then
    # trains with its own view (request.settings_for).
    for method_name in chosen if isinstance(chosen, list) else [chosen]:
        if not isinstance(method_name, str):
            continue
        for name in (method_files or (lambda m: [f"{m}.yaml"]))(method_name):
            if (props / name).is_file():
                settings.update(read_yaml(props / name))
    for layer in user_layers:
        settings.update(layer)
    settings["config_files"] = [str(f) for f in files]
    return settings


def user_values(config_files=None, config_dict=None) -> dict:
    """What the user set (their files, then their overrides), not the defaults."""
    files = config_files if config_files is not None else (config_dict or {}).get("config_files")
    if isinstance(files, str):
        files = files.split()
    values = {}
    for f in files or []:
        values.update(read_yaml(f))
    values.update(_numbers(dict(config_dict or {})))
    values.pop("config_files", None)
    return values


def check_unknown(given: dict, known: set[str]) -> None:
    """A key the user set that neither the plugin nor RecBole (for this model
    and dataset) knows is almost always a typo: refuse it, naming the closest."""
    import difflib

    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            raise UnknownKey(key, given[key], close[0] if close else None)


# The keys model, dataset and method always name a run; every other key counts
# only where it differs from the plugin's declared defaults (OpenLTH's rule).
IDENTITY_KEYS = ("model", "dataset", "method")

# The plugin's default keys when a run's identity hashed every stored setting,
# defaults included (up to 1.2.1's first plugin releases).  A key a later
# release adds at its default is left out of that old hash too, so a run
# directory made then is still found by the same command.
LEGACY_DEFAULT_KEYS = frozenset({
    "dense_weight_decays", "dsl_decay", "dsl_drop", "dsl_end_epoch", "dsl_grow", "dsl_init_ratio",
    "dsl_update_epochs", "eb_epsilon", "eb_max_epochs", "eb_window", "epochs", "eval_memory_mb", "eval_step",
    "executor", "fused_optimizer", "kd_teacher", "kd_temperature", "kd_topk", "kd_type", "kd_weight", "method",
    "metrics", "output_root", "pep_granularity", "pep_init", "pep_lr", "pep_pressure", "pep_schedule_epochs",
    "pep_weight_decay", "progress", "prune_params", "prune_rate", "prune_scope", "ray_address", "rewind_epoch",
    "rounds", "run_dir", "seeds", "show_progress", "snip_batches", "stopping_step", "target_sparsities",
    "target_sparsity", "topk", "valid_metric", "worker_threads", "workers",
})

# Keys whose declared default a release changed, each with the value it was
# released with.  Identities, and a stored run's missing keys, compare with that
# first value: a folder made before the change is found by the command that made
# it (the old value now spelled out), and a run at the new default gets a folder
# of its own instead of meeting the old one's settings.
RELEASED_DEFAULTS = {
    "dsl_regrow_dropped": False,  # True since 0.2.0 (docs/fidelity.md, "DSL's options, one at a time")
}

_MISSING = object()


def _released(defaults: dict) -> dict:
    return {**defaults, **{k: v for k, v in RELEASED_DEFAULTS.items() if k in defaults}}


def declared_defaults(method, method_files: Callable[[str], list[str]] | None = None, model=None) -> dict:
    """The plugin layers' values with no user input: ``overall.yaml``, the
    task file of ``model`` and the properties files of ``method`` (a name or
    a study's list), merged."""
    defaults = merge_settings(model=model, method=method, config_files=[], config_dict={}, method_files=method_files)
    defaults.pop("model", None)  # it chose the task's layer; it is an identity key, never a default
    return defaults


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _hash(relevant: dict) -> str:
    blob = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def run_identity(settings: dict, defaults: dict) -> str:
    """Short hash of what changes what a run computes: model, dataset, method
    and every key whose value differs from ``defaults`` (``declared_defaults``),
    so a key a release adds at its default changes no run's identity."""
    defaults = _released(defaults)
    return _hash({k: v for k, v in settings.items() if k not in VOLATILE_KEYS
                  and (k in IDENTITY_KEYS or k not in defaults or not _same(v, defaults[k]))})


def legacy_run_identity(settings: dict, defaults: dict) -> str:
    """The identity run directories were named by before ``run_identity``:
    every stored setting, defaults included, but no key added since
    (``LEGACY_DEFAULT_KEYS``) while it holds its default."""
    defaults = _released(defaults)
    return _hash({k: v for k, v in settings.items() if k not in VOLATILE_KEYS
                  and not (k in defaults and k not in LEGACY_DEFAULT_KEYS and _same(v, defaults[k]))})


def differing_keys(stored: dict, settings: dict, defaults: dict) -> list[str]:
    """The keys (not volatile) whose values differ between a run directory's
    stored settings and these; a key missing from one side counts as its
    default (a key added since that run was started, at its default, is equal)."""
    defaults = _released(defaults)
    def value(values, key):
        return values[key] if key in values else defaults.get(key, _MISSING)

    keys = (set(stored) | set(settings)) - VOLATILE_KEYS
    return sorted(k for k in keys if value(stored, k) != value(settings, k))
