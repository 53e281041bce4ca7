"""Errors the user can act on: each names the key and what is allowed."""
from __future__ import annotations

from contextlib import contextmanager


class ConfigError(ValueError):
    """Bad input, raised before any training starts."""

    exit_code = 2

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid {key}={value!r}: allowed values are {allowed}")


class UnknownKey(ConfigError):
    """A key neither the plugin nor RecBole knows (almost always a typo)."""

    def __init__(self, key: str, value, closest: str | None):
        self.closest = closest
        hint = f"did you mean {closest}? " if closest else ""
        ValueError.__init__(self, f"unknown key {key}={value!r}: {hint}(run_recbole_lth.py --help lists the "
                                  f"plugin's keys; RecBole's are in its properties files)")
        self.key, self.value, self.allowed = key, value, "a known key"


class TrainingDiverged(RuntimeError):
    """The loss became NaN; finished tickets stay in the run directory."""

    exit_code = 1


class RunDamaged(RuntimeError):
    """A file of a finished part of the run cannot be read; the message names it
    and says how to recover.  Every other finished ticket is kept."""

    exit_code = 1


class RankFailed(RuntimeError):
    """A process of a launched run (``--nproc``) failed; the others were
    stopped.  ``exit_code``: the failing rank's (2 for bad input); the
    message is that rank's one line."""

    def __init__(self, exit_code: int, message: str):
        self.exit_code = exit_code
        super().__init__(message)


def is_nan_loss(err: ValueError) -> bool:
    """RecBole's trainer stops a NaN loss with ``ValueError("Training loss is nan")``."""
    return "nan" in str(err).lower()


def raise_if_search_diverged(err: ValueError, search: str, when: str, run_dir, hints: str) -> None:
    """A method's search (no ticket of its own yet) hit RecBole's NaN-loss
    ``ValueError``: one message naming where and what to lower.  Any other
    ``ValueError`` is left to the caller to re-raise."""
    if is_nan_loss(err):
        raise TrainingDiverged(
            f"{search}: the training loss became NaN in {when} (no ticket of this method was trained; finished "
            f"tickets are kept in {run_dir}); try a smaller {hints}"
        ) from err


@contextmanager
def search_diverges(search: str, when, run_dir, hints: str):
    """``with search_diverges(...)``: a NaN loss inside is :func:`raise_if_search_diverged`'s
    message; ``when()`` names where the search was when it failed."""
    try:
        yield
    except ValueError as err:
        raise_if_search_diverged(err, search, when(), run_dir, hints)
        raise
