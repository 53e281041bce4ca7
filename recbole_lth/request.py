"""The request: what a command names (model, dataset, method(s), config
files, overrides), made once at the entry and checked once.

A ``Request`` is a frozen value; a changed one (a seed's run, a trial's
values, a worker's GPU) is a new value (:meth:`Request.with_overrides`).
Its settings are merged and checked on first use and kept for its life, so
one ``run()`` merges them once; each caller gets its own copy of the dicts
(the run's checks add ``data_path`` to theirs).  A pickled request (a
worker's, a launched rank's) leaves them behind: that process checks again.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from recbole_lth import backbones, methods
from recbole_lth.core import tasks
from recbole_lth.core.errors import ConfigError
from recbole_lth.core.settings import check_common, check_dataset, check_unknown, merge_settings, user_values
from recbole_lth.engine import builder


@dataclass(frozen=True)
class Request:
    """One command's input, as ``recbole_lth.run`` takes it."""

    model: object = None
    dataset: object = None
    method: object = None
    config_files: object = None
    config_dict: dict | None = None

    @classmethod
    def from_options(cls, options: dict) -> Request:
        """The request of the command line's ``--key=value`` options: the
        named keys taken out, every other one an override."""
        return cls(model=options.pop("model", None), dataset=options.pop("dataset", None),
                   method=options.pop("method", None), config_files=options.pop("config_files", None),
                   config_dict=options)

    def with_overrides(self, **values) -> Request:
        """This request with ``values`` over its overrides."""
        return replace(self, config_dict={**(self.config_dict or {}), **values})

    def user_values(self) -> dict:
        """What the user set (their files, then their overrides), not the defaults."""
        return user_values(self.config_files, self.config_dict)

    def settings(self) -> tuple[dict, dict[str, dict]]:
        """The merged settings of the run and each method's view of them, all
        checked (see :func:`settings_for`); fresh dicts each call, merged once."""
        merged, views = self._checked
        copied = {id(merged): dict(merged)}
        return copied[id(merged)], {name: copied.setdefault(id(view), dict(view)) for name, view in views.items()}

    @cached_property
    def _checked(self) -> tuple[dict, dict[str, dict]]:
        return _check(self)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_checked"}


def settings_for(model=None, dataset=None, method=None, config_files=None, config_dict=None
                 ) -> tuple[dict, dict[str, dict]]:
    """The merged settings of the run and each method's view of them, all
    checked (no data loaded, nothing written).

    A single method's view is the run's settings.  A study (``method`` a
    list) merges every method's properties into the run's settings (what is
    stored and hashed); each method trains with its own view: overall <
    that method's properties < the user's files and overrides."""
    return Request(model, dataset, method, config_files, config_dict).settings()


def _check(request: Request) -> tuple[dict, dict[str, dict]]:
    model, dataset, config_files, config_dict = request.model, request.dataset, request.config_files, request.config_dict
    merged = merge_settings(model, dataset, request.method, config_files, config_dict, methods.properties_files)
    backbones.check_model(merged.get("model"))
    check_dataset(merged)
    recbole_defaults = builder.recbole_values(merged["model"], merged["dataset"])
    tasks.resolve(merged, recbole_defaults)
    given = request.user_values()
    known = set(methods.all_keys()) | builder.recbole_keys(merged["model"], merged["dataset"]) | {"method"}
    check_unknown(given, known)
    names = methods.names(merged.get("method"))
    for key in methods.foreign_keys(given, names):
        raise ConfigError(key, given[key], f"nothing in a run of {', '.join(names)}: {key} is read by "
                                           f"{' and '.join(methods.owners(key))} only (drop it, or add that method)")
    if len(names) == 1:
        merged["method"] = names[0]  # a one-method list (--method=[dsl]) is that method's run
        methods.check(merged)
        return merged, {names[0]: merged}
    overrides = dict(config_dict or {})
    views = {}
    for name in names:
        view = merge_settings(model, dataset, None, config_files, {**overrides, "method": name},
                              methods.properties_files)
        tasks.resolve(view, recbole_defaults)
        methods.check(view)
        views[name] = view
    check_common(merged)
    for key in ("target_sparsities",):  # stored as the methods train them
        if merged.get(key) == "imp":
            merged[key] = next(iter(views.values()))[key]
    return merged, views
