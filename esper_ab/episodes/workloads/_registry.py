"""Finding a workload's plug-in: a registered name or ``module:attribute``.

A name is looked up among the Python entry points of group ``esper_ab.workloads`` (so
``pip install my-package`` is enough); esper-ab declares its own four there too, and also
lists them here so an install whose metadata predates them still finds them. A reference
``package.module:attribute`` imports the module and takes the attribute: a
``WorkloadPlugin``, or a callable that returns one. Built-in and plug-in workloads take the
same path from here on.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from esper_ab.episodes.blueprints import register_catalog
from esper_ab.episodes.workloads import _base
from esper_ab.episodes.workloads._base import Workload, WorkloadConfig
from esper_ab.episodes.workloads._plugin import WorkloadPlugin
from esper_ab.errors import ConfigError, EsperABError, bad_value

ENTRY_POINT_GROUP = "esper_ab.workloads"
_BUILTIN = {
    "synthetic-cnn": "esper_ab.episodes.workloads.synthetic_cnn:WORKLOAD",
    "synthetic-seq": "esper_ab.episodes.workloads.synthetic_seq:WORKLOAD",
    "digits": "esper_ab.episodes.workloads.digits:WORKLOAD",
    "cifar10": "esper_ab.episodes.workloads.cifar10:WORKLOAD",
    "esper-lite-cnn": "esper_ab.integrations.esper_lite.workload:WORKLOAD",  # needs esper-lite
}
_RESOLVED: dict[str, WorkloadPlugin] = {}   # reference as given -> plug-in
_BY_NAME: dict[str, WorkloadPlugin] = {}    # plug-in name -> the last one resolved
_FIX = "see docs/PLUGINS.md"


def _entry_points() -> dict[str, str]:
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def list_workloads() -> tuple[str, ...]:
    """Every registered workload name (esper-ab's own first)."""
    return tuple(dict.fromkeys([*_BUILTIN, *sorted(_entry_points())]))


def _load(reference: str, shown_as: str) -> WorkloadPlugin:
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise bad_value("workload", shown_as, "write module:attribute, e.g. "
                                              f"my_package.workloads:MY_WORKLOAD ({_FIX})")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"workload {shown_as!r}: module {module_name!r} does not import "
                          f"({type(exc).__name__}: {exc}): install the package that provides "
                          "it or fix the module path") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"workload {shown_as!r}: {module_name} has no attribute {attr!r}: "
                              f"point at a WorkloadPlugin in that module ({_FIX})")
        obj = getattr(obj, part)
    if not isinstance(obj, WorkloadPlugin) and callable(obj) and not isinstance(obj, type):
        try:
            obj = obj()
        except EsperABError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user's factory: any failure is one line
            raise ConfigError(f"workload {shown_as!r}: its factory {attr}() raised "
                              f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}: "
                              "fix the factory") from None
    if not isinstance(obj, WorkloadPlugin):
        raise ConfigError(f"workload {shown_as!r} is a {type(obj).__name__}, not a "
                          f"WorkloadPlugin: point at a WorkloadPlugin or a function returning "
                          f"one ({_FIX})")
    return obj


def resolve_workload(name: str) -> WorkloadPlugin:
    """The plug-in of a registered name or a ``module:attribute`` reference."""
    if not isinstance(name, str) or not name:
        raise bad_value("workload", name, "name a registered workload or module:attribute")
    if name in _RESOLVED:
        return _RESOLVED[name]
    if ":" in name:
        plugin = _load(name, name)
    else:
        target = _entry_points().get(name) or _BUILTIN.get(name)
        if target is None and name in _BY_NAME:   # a module:attribute plug-in, by its name
            return _BY_NAME[name]
        if target is None:
            raise ConfigError(f"workload={name!r} is invalid: unknown workload {name!r}; use "
                              f"one of {', '.join(list_workloads())}, or module:attribute of "
                              "a WorkloadPlugin (pip install the package that registers it)")
        plugin = _load(target, name)
    if isinstance(plugin.catalog, str):
        register_catalog(plugin.blueprint_catalog)
    else:
        register_catalog(plugin.catalog)
    _RESOLVED[name] = plugin
    _BY_NAME[plugin.name] = plugin
    return plugin


def workload_config(name: str, *, data_dir: str | None = None,
                    **options: object) -> WorkloadConfig:
    """The config of workload ``name`` with ``options`` (``data_dir`` is one more option,
    for the workloads that read a folder)."""
    plugin = resolve_workload(name)
    if data_dir is not None:
        options["data_dir"] = data_dir
    return plugin.config(name, **options)


def build_workload(config: WorkloadConfig, *, seed: int) -> Workload:
    """Build the tensors of ``config`` for one seed (the replicate)."""
    plugin = resolve_workload(config.source or config.name)
    data = plugin.build_data(config, seed)
    return Workload(config, seed, data.train_x, data.train_y, data.test_x, data.test_y,
                    plugin=plugin)


_base._resolve = resolve_workload
