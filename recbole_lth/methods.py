"""The method registry: ``--method=NAME`` -> a function of a prepared Run.

A method may also register a ``check(settings)`` that raises ConfigError for
its own keys; it runs with the common checks, before any data is loaded.
"""
from __future__ import annotations

from recbole_lth import dsl, pep, search

METHODS = {
    "dense": search.dense,
    "imp": search.imp,
    "wr": search.wr,
    "omp": search.omp,
    "rp": search.rp,
    "pep": pep.pep,
    "dsl": dsl.dsl,
}

CHECKS: dict = {
    "pep": pep.check,
    "dsl": dsl.check,
}
