"""The backbone registry: ``--model=NAME`` -> its declared :class:`Backbone`, if any.

Any RecBole general, sequential or context-aware recommender runs the mask methods and ``pep`` with no
declaration; what needs one (``small_dense``, ``lcm``, KD, compact scoring,
MACs) is refused for an undeclared model by :func:`require`, naming what is
missing.  Adding a backbone is one module declaring its ``BACKBONE`` and
one line below.
"""
from __future__ import annotations

from torch import nn

from recbole_lth.backbones import bpr, cdae, context, lightgcn, multivae, neumf, ngcf, sequential
from recbole_lth.backbones.base import Backbone, generic_tables
from recbole_lth.core import masking, tasks
from recbole_lth.core.errors import ConfigError

_DECLARED = [
    bpr.BACKBONE,
    lightgcn.BACKBONE,
    neumf.BACKBONE,
    multivae.BACKBONE,
    cdae.BACKBONE,
    ngcf.BACKBONE,
    sequential.SASREC,
    sequential.GRU4REC,
    sequential.BERT4REC,
    *context.BACKBONES,
]

BACKBONES: dict[str, Backbone] = {b.name: b for b in _DECLARED}

# What each capability is, for the refusal's one line.
CAPABILITIES = {
    "widths": "the width keys small_dense shrinks",
    "scores": "its scores before the output activation (distillation)",
    "compact": "how a compact ticket scores (compact loading)",
    "lcm": "the embedding tables lcm projects",
    "costs": "its MAC terms",
}


def get(model_name: str) -> Backbone | None:
    """The declaration of ``model_name``, or None (a generic model)."""
    return BACKBONES.get(model_name)


def of(model: nn.Module) -> Backbone | None:
    return BACKBONES.get(type(model).__name__)


def declaring(capability: str) -> list[str]:
    return [b.name for b in _DECLARED if getattr(b, capability) is not None]


def require(model_name: str, capability: str, needed_by: str):
    """The declared ``capability`` of ``model_name``, or a ConfigError naming what is missing."""
    declared = get(model_name)
    value = getattr(declared, capability) if declared is not None else None
    if value is None:
        raise ConfigError(
            "model", model_name,
            f"{', '.join(declaring(capability))} for {needed_by}: {model_name} declares no "
            f"{CAPABILITIES[capability]} (recbole_lth/backbones/)")
    return value


def check_model(model_name) -> None:
    """A RecBole model of a family the plugin has a task for (general,
    sequential, context-aware), declared or not, and not one the task refuses."""
    if model_name in BACKBONES:
        return
    task = tasks.for_model(model_name)
    if task is not None and model_name not in task.refused:
        return
    families = "; ".join(f"{t.label}: {', '.join(tasks.recommenders(t))}" for t in tasks.TASKS.values())
    if task is not None:
        families = f"a model other than {model_name} ({task.refused[model_name]}); {families}"
    raise ConfigError("model", model_name, families)


# ---------------------------------------------------------- the mask core's view
def prunable(model: nn.Module, prune_params) -> dict[str, nn.Parameter]:
    """The tensors to prune: a declared backbone's tables for ``embeddings``
    (in model order), else the mask core's rule (:func:`masking.select_prunable`)."""
    declared = of(model)
    if declared is None or prune_params != "embeddings":
        return masking.select_prunable(model, prune_params)
    names = declared.tables(model)
    return {name: p for name, p in model.named_parameters() if name in names}


def table_axes(model: nn.Module, names) -> dict[str, tuple[str, int] | None]:
    """Which entity each named tensor indexes, and along which axis: declared, else from the sizes."""
    declared = of(model).tables(model) if of(model) is not None else {}
    generic = masking.table_axes(model, [n for n in names if n not in declared])
    return {name: declared[name] if name in declared else generic[name] for name in names}


__all__ = ["Backbone", "BACKBONES", "generic_tables", "get", "of", "require", "check_model", "prunable",
           "table_axes"]
