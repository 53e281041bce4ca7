"""``benchmarks/bench_fidelity.py``: every study it runs has the dense reference its tables are relative to."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_fidelity  # noqa: E402
from recbole_lth.core.errors import ConfigError  # noqa: E402


def test_methods_without_a_dense_reference_get_dense_first():
    # pep, dsl, rp and small_dense train no dense ticket of their own: the study needs one added.
    assert bench_fidelity.with_dense(["pep", "dsl"]) == ["dense", "pep", "dsl"]
    assert bench_fidelity.with_dense(["rp", "small_dense"]) == ["dense", "rp", "small_dense"]


def test_a_method_that_trains_dense_keeps_the_list_as_given():
    # omp and imp train it already; the study (and its folder name) stays what it was.
    assert bench_fidelity.with_dense(["omp", "pep"]) == ["omp", "pep"]
    assert bench_fidelity.with_dense(["imp"]) == ["imp"]


def test_an_unknown_method_is_refused_by_name():
    with pytest.raises(ConfigError, match="method"):
        bench_fidelity.with_dense(["pep", "magic"])
