"""The task protocol: one home for what differs between RecBole's model families.

RecBole has general (user x item), sequential (item histories) and
context-aware (CTR: labeled feature rows) recommenders.  What the plugin
needs to know of each lives here and nowhere else:

* which RecBole ``ModelType`` it is, and its one-line name for messages;
* its evaluation: ``full_sort`` ranking over every item (Recall/NDCG@K) or
  ``labeled`` scoring of held-out rows (AUC/LogLoss), with each metric's
  direction (LogLoss, RMSE, MAE: lower is better);
* the properties file that sets its RecBole data and evaluation keys
  (``properties/task-<name>.yaml``, read between ``overall.yaml`` and the
  method's file; the general task needs none) and the checks of those keys;
* which entity a table row indexes (``user``/``item``, or ``feature``: a value
  of one field of a CTR model's token table), and the entity sizes;
* which fields the atomic files must hold (ids; a sequential model's time).

Engine, methods, backbones and views ask the task (:func:`of_model`,
:func:`for_model`); no other module tests a RecBole model type or a metric name.
Nothing here imports RecBole at import time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from recbole_lth.core.errors import ConfigError

# Metrics where a lower value is better (RecBole's "smaller" metrics).
LOWER_IS_BETTER = frozenset({"logloss", "rmse", "mae"})


def metric_base(metric) -> str:
    """``test_logloss`` / ``LogLoss`` / ``recall@20`` -> ``logloss`` / ``recall``."""
    name = str(metric or "").lower()
    for prefix in ("test_", "valid_"):
        name = name.removeprefix(prefix)
    return name.partition("@")[0]


def lower_is_better(metric) -> bool:
    return metric_base(metric) in LOWER_IS_BETTER


def improvement(value: float, reference: float, metric) -> float:
    """``value - reference`` signed so that a positive number is always better."""
    return (reference - value) if lower_is_better(metric) else (value - reference)


def at_least_as_good(value: float, reference: float, metric) -> bool:
    return improvement(value, reference, metric) >= 0


# ------------------------------------------------------------------ tasks
def _general_sizes(model) -> dict[str, int | None]:
    return {"user": getattr(model, "n_users", None), "item": getattr(model, "n_items", None)}


def _sequential_sizes(model) -> dict[str, int | None]:
    return {"item": getattr(model, "n_items", None)}


def token_fields(model) -> list[tuple[str, int, int]]:
    """A context-aware model's token fields: ``(name, first row, rows)`` in its
    shared token table (RecBole's ``token_field_offsets`` and ``_dims``)."""
    names = list(getattr(model, "token_field_names", []) or [])
    dims = [int(d) for d in (getattr(model, "token_field_dims", []) or [])]
    offsets = [int(o) for o in (getattr(model, "token_field_offsets", []) if dims else [])]
    return list(zip(names, offsets, dims))


def field_rows(model, names) -> dict[str, list[tuple[str, int, int]]]:
    """The named tensors that are a CTR model's shared token table (its
    second-order ``FMEmbedding`` and its first-order one), each with its
    fields' row ranges ``(field, first row, rows)``: ``prune_scope: per_field``."""
    fields = token_fields(model)
    rows = sum(d for _, _, d in fields)
    params = dict(model.named_parameters())
    return {name: fields for name in names
            if fields and name.endswith("token_embedding_table.embedding.weight") and params[name].shape[0] == rows}


def _context_sizes(model) -> dict[str, int | None]:
    fields = token_fields(model)
    return {"feature": sum(d for _, _, d in fields) if fields else None}


def _eval_mode(settings: dict) -> str | None:
    mode = (settings.get("eval_args") or {}).get("mode")
    if isinstance(mode, dict):
        modes = set(mode.values())
        return next(iter(modes)) if len(modes) == 1 else "mixed"
    return mode


def _check_sequential(settings: dict) -> None:
    eval_args = settings.get("eval_args") or {}
    if eval_args.get("order") not in (None, "TO"):
        raise ConfigError("eval_args", eval_args, "order TO for a sequential model (each user's history in time "
                                                  "order; RO shuffles it)")
    split = eval_args.get("split") or {}
    if "LS" not in split:
        raise ConfigError("eval_args", eval_args, "split {LS: valid_and_test} for a sequential model (the last "
                                                  "items of each history held out; a random split leaks the future)")
    if _eval_mode(settings) not in (None, "full"):
        raise ConfigError("eval_args", eval_args, "mode full for a sequential model (full-sort ranking over items)")


def _check_context(settings: dict) -> None:
    eval_args = settings.get("eval_args") or {}
    if _eval_mode(settings) != "labeled":
        raise ConfigError("eval_args", eval_args, "mode labeled for a context-aware model (AUC/LogLoss on "
                                                  "held-out labeled rows; full-sort ranking is for general and "
                                                  "sequential models)")


def _check_full_sort(settings: dict) -> None:
    if _eval_mode(settings) == "labeled":
        raise ConfigError("eval_args", settings.get("eval_args"),
                          "mode full (or uniN/popN) for a ranking model: mode labeled is for context-aware models")


def label_columns(config) -> list[str]:
    """The .inter columns a context-aware model's label may come from: the
    ``threshold`` fields when set (RecBole makes the label from them), else
    ``LABEL_FIELD``."""
    threshold = config["threshold"]
    return list(threshold) if isinstance(threshold, dict) and threshold else [config["LABEL_FIELD"] or "label"]


@dataclass(frozen=True)
class Task:
    name: str  # general | sequential | context
    model_type: str  # RecBole's ModelType member name
    label: str  # for messages: "a RecBole general recommender"
    evaluation: str  # full_sort | labeled
    properties: str | None  # properties/<file> read after overall.yaml, None: overall.yaml's are the task's
    # sizes(model) -> {entity: rows}: which entity a table row may index, and how many there are
    sizes: Callable[[object], dict]
    # check(settings): the RecBole keys this task needs, before any data is read
    check: Callable[[dict], None]
    # which of RecBole's field keys (with their defaults) the .inter files must hold
    id_fields: tuple[tuple[str, str], ...]
    # models of this type the plugin refuses, each with its reason
    refused: dict

    @property
    def ranks_items(self) -> bool:
        return self.evaluation == "full_sort"


GENERAL = Task("general", "GENERAL", "a RecBole general recommender", "full_sort", None, _general_sizes,
               _check_full_sort, (("USER_ID_FIELD", "user_id"), ("ITEM_ID_FIELD", "item_id")), {})
SEQUENTIAL = Task(
    "sequential", "SEQUENTIAL", "a RecBole sequential recommender", "full_sort", "task-sequential.yaml",
    _sequential_sizes, _check_sequential,
    (("USER_ID_FIELD", "user_id"), ("ITEM_ID_FIELD", "item_id"), ("TIME_FIELD", "timestamp")),
    {"DIN": "scored by AUC on sampled items, not full-sort (RecBole's own special case)",
     "DIEN": "scored by AUC on sampled items, not full-sort (RecBole's own special case)",
     "KSR": "needs knowledge-graph files", "S3Rec": "needs a pre-training stage",
     "GRU4RecKG": "needs entity embedding files"},
)
CONTEXT = Task(
    "context", "CONTEXT", "a RecBole context-aware (CTR) recommender", "labeled", "task-context.yaml",
    _context_sizes, _check_context, (), {},
)
TASKS = {t.name: t for t in (GENERAL, SEQUENTIAL, CONTEXT)}
_BY_TYPE = {t.model_type: t for t in TASKS.values()}


def model_class(name):
    """RecBole's class of ``--model=name``, or None."""
    if not isinstance(name, str) or not name:
        return None
    from recbole.utils import get_model

    try:
        return get_model(name)
    except (ValueError, AttributeError, ImportError, TypeError):
        return None


def for_model(name) -> Task | None:
    """The task of the RecBole model ``name``; None: no such model, or a family the plugin has no task for."""
    cls = model_class(name)
    kind = getattr(getattr(cls, "type", None), "name", None)
    return _BY_TYPE.get(kind)


def of_model(model) -> Task:
    """The task of a built RecBole model (general when it says nothing)."""
    kind = getattr(getattr(type(model), "type", None), "name", None)
    return _BY_TYPE.get(kind, GENERAL)


def of_config(config) -> Task:
    """The task of a RecBole config (its ``MODEL_TYPE``)."""
    return _BY_TYPE.get(getattr(config["MODEL_TYPE"], "name", None), GENERAL)


def properties_files(model_name) -> list[str]:
    """The task's properties file(s), for the settings' layers."""
    task = for_model(model_name)
    return [task.properties] if task is not None and task.properties else []


def recommenders(task: Task) -> list[str]:
    """RecBole's trainable models of ``task``'s type, refused ones excluded."""
    import importlib

    from recbole.utils import ModelType

    module = {"general": "general_recommender", "sequential": "sequential_recommender",
              "context": "context_aware_recommender"}[task.name]
    found = vars(importlib.import_module(f"recbole.model.{module}"))
    kind = getattr(ModelType, task.model_type)
    return sorted(n for n, cls in found.items()
                  if isinstance(cls, type) and getattr(cls, "type", None) == kind and n not in task.refused)


def resolve(settings: dict, recbole_defaults: dict) -> None:
    """Defaults that depend on RecBole's own properties of the model: a
    sequential model trained with the softmax loss (``loss_type: CE``, SASRec's
    and most others') takes no sampled negatives, one with a pairwise loss
    (FPMC: BPR) or none declared (TransRec, BPR by construction) keeps
    RecBole's; the user's own value always wins."""
    if for_model(settings.get("model")) is not SEQUENTIAL:
        return
    if settings.get("loss_type", recbole_defaults.get("loss_type")) != "CE":
        return
    if "train_neg_sample_args" not in settings:
        settings["train_neg_sample_args"] = None
    elif settings["train_neg_sample_args"] is not None:
        raise ConfigError("train_neg_sample_args", settings["train_neg_sample_args"],
                          "null with loss_type CE (RecBole refuses negatives with the softmax loss)")


def check_settings(settings: dict) -> None:
    """The task's own keys (the model is known to have a task)."""
    task = for_model(settings.get("model"))
    if task is not None:
        task.check(settings)
