"""The method registry: ``--method=NAME`` -> a function of a prepared Run.

A method may also register a ``check(settings)`` that raises ConfigError for
its own keys; it runs with the common checks, before any data is loaded.
"""
from __future__ import annotations

from recbole_lth import baselines, distill, dsl, pep, search

METHODS = {
    "dense": search.dense,
    "imp": search.imp,
    "wr": search.wr,
    "omp": search.omp,
    "rp": search.rp,
    "pep": pep.pep,
    "dsl": dsl.dsl,
    # Distillation from the dense model (any method distils with kd_weight > 0;
    # these names only set its default, see properties/<name>.yaml).
    "imp_kd": search.imp,
    "omp_kd": search.omp,
    "rp_kd": search.rp,
    # Dense baselines at each target's parameter budget.
    "small_dense": baselines.small_dense,
    "lcm": baselines.lcm,
}

CHECKS: dict = {
    "pep": pep.check,
    "dsl": dsl.check,
    "imp_kd": distill.check_imp_kd,
    "omp_kd": distill.check_target_sparsities,
    "rp_kd": distill.check_target_sparsities,
    "small_dense": baselines.check_small_dense,
    "lcm": baselines.check_lcm,
}
