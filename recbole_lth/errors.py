"""Errors the user can act on: each names the key and what is allowed."""
from __future__ import annotations


class ConfigError(ValueError):
    """Bad input, raised before any training starts."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid {key}={value!r}: allowed values are {allowed}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN; finished tickets stay in the run directory."""
