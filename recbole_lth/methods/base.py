"""What a method declares: its name, its plan, its keys and checks, its dense reference.

A method's defaults live in ``properties/<name>.yaml`` (a variant reads its
base method's file first); its keys are declared here with their checks and
help lines, so ``--help``, the checks and the defaults never disagree.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

from recbole_lth.core.paths import target_ticket
from recbole_lth.core.settings import Key
from recbole_lth.engine.run import TicketSpec


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line: what it trains (--help, the README's table)
    plan: Callable  # plan(run): asks the run for its tickets in order
    keys: tuple[Key, ...] = ()  # keys only this method reads
    check: Callable[[dict], None] | None = None  # checks across keys, before any data is loaded
    # Its dense ticket (paths.DENSE_TICKET): "reference" (trained by its plan,
    # the rows are judged against it), "teacher" (trained only to be distilled
    # from, which kd_teacher replaces: lcm) or "absent" (it trains none).
    dense: str = "absent"
    base: str | None = None  # a variant of this method (same plan, other defaults)
    # The sparsities its masks will have (checked against the tables before
    # anything trains), and the key that sets them.
    sparsities: Callable[[dict], list] = lambda settings: list(settings.get("target_sparsities") or [])
    sparsity_key: str = "target_sparsities"
    # How many tickets (rows) it adds besides the shared dense ticket, for the progress bar.
    tickets: Callable[[dict], int] = lambda settings: len(settings.get("target_sparsities") or [])
    # What one of its tickets deploys: "masked" (the masked tables), "smaller"
    # (a narrower dense model: small_dense) or "projected" (dense projected
    # tables: lcm); the export and the report's byte counts follow it.
    deploys: str = "masked"
    # Each ticket starts from the previous one's mask (IMP's rounds): the last
    # is the method's result (tune's objective).
    iterative: bool = False
    # The prune_scope values its masks honour (DSL's exchanges and PEP's
    # thresholds keep a table's or all tables' budget, not a field's).
    scopes: tuple[str, ...] = ("global", "per_table", "per_field")

    def variant(self, name: str, summary: str) -> "Method":
        """The same plan under another name whose properties file overrides
        the base method's defaults (``imp_kd``: ``imp`` with ``kd_weight: 1``)."""
        return replace(self, name=name, summary=summary, base=self.name)

    def trains_dense(self, settings: dict) -> bool:
        """Whether the run's dense ticket is trained for this method: its own
        reference, or the teacher of its distillation."""
        if self.dense == "reference":
            return True
        if self.dense == "teacher":
            return not settings.get("kd_teacher")
        return bool(settings.get("kd_weight")) and not settings.get("kd_teacher")

    def properties_files(self) -> list[str]:
        """Its properties files, lowest priority first."""
        return ([f"{self.base}.yaml"] if self.base else []) + [f"{self.name}.yaml"]


def each_target(run, ticket: Callable) -> None:
    """The plan of a method with one ticket per entry of ``target_sparsities``,
    in order (rounds 1, 2, ...), each named ``target_ticket(method, sparsity)``:
    ``ticket(index, sparsity, key)`` returns the run that trains it (``run``, or
    one ``with_model`` of its own model) and the rest of its :class:`TicketSpec`
    (masks, start state and whatever else, as a dict)."""
    for index, sparsity in enumerate(run.settings["target_sparsities"], start=1):
        key = target_ticket(run.method, sparsity)
        trainer, fields = ticket(index, sparsity, key)
        trainer.ticket(TicketSpec(key, round_idx=index, target_sparsity=sparsity, **fields))


def ignore_rewind(run, why: str) -> None:
    """A method whose tickets do not start from the rewind state: one warning when ``rewind_epoch`` is set."""
    if run.settings["rewind_epoch"]:
        logging.getLogger("recbole_lth").warning(f"{why}; rewind_epoch is ignored")


# A search's saved masks (eb, gmp, pep): one flat dict of tensors, "<target index>/<tensor name>",
# so that search/<method>.pt holds tensors only (weights_only=True).
def stored_masks(t: int, masks: dict) -> dict:
    """Target ``t``'s masks under their stored names, on the CPU."""
    return {f"{t}/{n}": m.cpu() for n, m in masks.items()}


def target_masks(run, stored: dict, t: int) -> dict:
    """Target ``t``'s masks of the run's prunable tensors, on its device."""
    return {n: stored[f"{t}/{n}"].to(run.device) for n in run.prunable}
