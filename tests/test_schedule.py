"""Sparsity schedules (sparse/schedule.py): exact values, and PEP's pressure unchanged."""
import random

import pytest

from recbole_lth.methods import pep
from recbole_lth.sparse.schedule import SparsitySchedule


def _at(shape, step, **kw):
    return SparsitySchedule(final=0.75, start=20, end=100, shape=shape, **kw).at(step)


@pytest.mark.parametrize("shape, quarter, half", [
    # Zhu & Gupta: s_f + (s_i - s_f)(1 - p)^3 = 0.75 - 0.75 * 0.75^3 and 0.75 - 0.75 / 8.
    ("cubic", 0.43359375, 0.65625),
    ("linear", 0.1875, 0.375),
    ("cosine", 0.75 - 0.75 * 0.5 * (1 + 0.5 ** 0.5), 0.375),
    ("cubic_late", 0.01171875, 0.09375),
])
def test_each_shape_gives_its_formula_exactly(shape, quarter, half):
    assert _at(shape, 0) == _at(shape, 20) == 0.0  # initial until start
    assert _at(shape, 40) == pytest.approx(quarter, abs=0 if shape != "cosine" else 1e-15)
    assert _at(shape, 60) == half
    assert _at(shape, 100) == _at(shape, 500) == 0.75  # final, exactly, from end on


def test_an_initial_sparsity_is_left_from_start():
    schedule = SparsitySchedule(final=0.75, initial=0.25, start=0, end=8)
    assert schedule.at(0) == 0.25 and schedule.at(4) == 0.75 - 0.5 * 0.125 and schedule.at(8) == 0.75


def test_cubic_is_monotone_and_prunes_most_early():
    schedule = SparsitySchedule(final=0.9, start=10, end=110)
    values = [schedule.at(t) for t in range(0, 130)]
    assert values == sorted(values)
    # Half the way there in a fifth of the time: 1 - 0.8^3 = 0.488 of the final sparsity.
    assert schedule.at(30) == pytest.approx(0.9 * 0.488)


def test_updates_at_start_every_delta_t_and_at_end():
    schedule = SparsitySchedule(final=0.5, start=20, end=100, every=30)
    assert [t for t in range(0, 200) if schedule.updates(t)] == [20, 50, 80, 100]
    assert [t for t in range(0, 10) if SparsitySchedule(final=0.5, end=4).updates(t)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kw", [{"shape": "exponential"}, {"every": 0}, {"start": 5, "end": 4}])
def test_bad_schedules_are_refused(kw):
    with pytest.raises(ValueError):
        SparsitySchedule(final=0.5, **{"end": 10, **kw})


def test_peps_pressure_is_its_former_formula_bit_for_bit():
    rng = random.Random(0)
    for _ in range(2000):
        steps, final = rng.randrange(1, 5000), rng.random()
        step = rng.randrange(0, 2 * steps)
        former = final * min(1.0, step / max(1, steps)) ** 3
        assert pep.scheduled_sparsity(step, steps, final) == former
    # The epochs-and-float form short_schedule uses.
    assert pep.scheduled_sparsity(15, 20.0, 0.9925) == 0.9925 * (15 / 20.0) ** 3


def test_a_schedule_with_no_span_is_at_its_final_sparsity_from_its_step():
    schedule = SparsitySchedule(final=0.5, start=4, end=4)
    assert [schedule.at(t) for t in (3, 4, 5)] == [0.0, 0.5, 0.5] and schedule.updates(4)
