"""The method registry: ``--method=NAME`` -> a declared :class:`Method`.

Adding a method is one module declaring its ``Method``, one
``properties/<name>.yaml`` with its defaults, and one line below.
"""
from __future__ import annotations

from recbole_lth import backbones
from recbole_lth.core import pruning, settings
from recbole_lth.core.errors import ConfigError
from recbole_lth.methods import dense, dsl, eb, gmp, imp, lcm, omp, pep, rp, small_dense, snip
from recbole_lth.methods.base import Method
from recbole_lth.sparse import distill

_DECLARED = [
    dense.METHOD,
    imp.IMP,
    imp.WR,
    eb.METHOD,
    omp.METHOD,
    rp.METHOD,
    dsl.METHOD,
    pep.METHOD,
    snip.METHOD,
    gmp.METHOD,
    small_dense.METHOD,
    lcm.METHOD,
    # Distillation from the dense model: any method distils with kd_weight > 0;
    # these variants only change that default (properties/<name>.yaml).
    imp.IMP.variant("imp_kd", "imp with knowledge distillation from the dense round-0 model (LTH + KD)"),
    omp.METHOD.variant("omp_kd", "omp with knowledge distillation from the dense ticket"),
    rp.METHOD.variant("rp_kd", "rp with knowledge distillation (a dense ticket is trained first, the teacher)"),
]

METHODS: dict[str, Method] = {m.name: m for m in _DECLARED}


def get(name) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError("method", name, ", ".join(METHODS) + ", or a list of them (a study)")
    return METHODS[name]


def declared(name) -> Method | None:
    """The method a results row names, or None (a row of a method this
    version does not know): what views ask of a row's method."""
    return METHODS.get(name) if isinstance(name, str) else None


def deploys(row: dict) -> str:
    """What a results row's ticket deploys (``Method.deploys``; masked when unknown)."""
    method = declared(row.get("method"))
    return method.deploys if method is not None else "masked"


def names(method) -> list[str]:
    """The methods a run trains: one name, or a list of distinct names (a study)."""
    chosen = method if isinstance(method, list) else [method]
    if not chosen or len(set(map(str, chosen))) != len(chosen):
        raise ConfigError("method", method, "a method name or a non-empty list of distinct method names")
    for name in chosen:
        get(name)
    return list(chosen)


def resolve(view: dict) -> None:
    """``target_sparsities: imp``: the sparsities IMP's rounds reach under the
    view's ``prune_rate``, ``rounds`` and ``target_sparsity``, so that every
    method of a study is compared at exactly IMP's points."""
    if view.get("target_sparsities") != "imp":
        return
    sparsities = [round(s, 10) for s in imp.round_sparsities(view)]
    if not sparsities:
        raise ConfigError("target_sparsities", "imp", "imp only when IMP prunes at least one round (rounds >= 1)")
    view["target_sparsities"] = sparsities


def properties_files(name: str) -> list[str]:
    return METHODS[name].properties_files() if name in METHODS else []


def all_keys() -> dict[str, settings.Key]:
    """Every plugin key: common, distillation, and each method's own."""
    keys = list(settings.COMMON_KEYS) + list(distill.KEYS)
    for method in METHODS.values():
        keys += method.keys
    return {key.name: key for key in keys}


def foreign_keys(given: dict, chosen: list[str]) -> list[str]:
    """Keys the user set that only methods outside ``chosen`` read
    (``dsl_min_ratio`` in an omp run): they change nothing this run computes,
    yet would change its identity and folder."""
    own = {k.name for name in chosen for k in get(name).keys}
    shared = {k.name for k in settings.COMMON_KEYS} | {k.name for k in distill.KEYS}
    others = {k.name for m in METHODS.values() for k in m.keys} - own - shared
    return sorted(k for k in given if k in others)


def owners(key: str) -> list[str]:
    return [m.name for m in METHODS.values() if m.base is None and any(k.name == key for k in m.keys)]


def check(merged: dict) -> None:
    """Every check that needs no dataset and no model, for one method's settings."""
    method = get(merged.get("method"))
    backbones.check_model(merged.get("model"))
    settings.check_common(merged)
    resolve(merged)
    settings.check_keys(merged, distill.KEYS)
    if merged.get("kd_weight"):
        scores = backbones.require(merged.get("model"), "scores", "distillation (kd_weight > 0)")
        if scores.batch is not None and merged.get("kd_type") != "score":
            raise ConfigError("kd_type", merged.get("kd_type"),
                              f"score for {merged.get('model')}: ranking KD ranks each user's items, and a sequential "
                              f"or CTR model is distilled through its batch's own scores")
    if merged.get("prune_scope") not in method.scopes:
        raise ConfigError("prune_scope", merged.get("prune_scope"), f"{' or '.join(method.scopes)} for {method.name}")
    settings.check_keys(merged, method.keys)
    if method.check is not None:
        method.check(merged)


def check_counts(view: dict, numels: dict[str, int]) -> None:
    """Every planned ticket keeps at least one weight per table (``per_table``)
    or in the model (``global``): refused before anything trains."""
    method = get(view["method"])
    for sparsity in method.sparsities(view):
        counts = pruning.kept_counts(numels, sparsity, view["prune_scope"])
        empty = [n for n, c in counts.items() if c == 0] if isinstance(counts, dict) else (
            list(numels) if counts == 0 else [])
        if empty:
            raise ConfigError(
                method.sparsity_key, view.get(method.sparsity_key),
                f"values whose sparsity keeps at least one weight: {method.name}'s sparsity {sparsity:.10g} "
                f"keeps none of {', '.join(empty)} ({sum(numels.values())} prunable weights)",
            )


def planned_tickets(views: dict[str, dict]) -> int:
    """How many rows a run will write: each method's tickets, and the shared
    dense ticket once if any method trains it (with its weight-decay
    candidates, if any)."""
    dense = any(get(name).trains_dense(view) for name, view in views.items())
    grid = next(iter(views.values()), {}).get("dense_weight_decays") or []
    return int(dense) * (1 + len(grid)) + sum(get(name).tickets(view) for name, view in views.items())
