"""Name -> workload module. Each module has ``default_config(...)`` and ``build(config, seed)``."""

from __future__ import annotations

import importlib
from types import ModuleType

from esper_ab.episodes.workloads._base import Workload, WorkloadConfig
from esper_ab.errors import bad_value

_MODULES = {
    "synthetic-cnn": "esper_ab.episodes.workloads.synthetic_cnn",
    "synthetic-seq": "esper_ab.episodes.workloads.synthetic_seq",
    "digits": "esper_ab.episodes.workloads.digits",
    "cifar10": "esper_ab.episodes.workloads.cifar10",
}


def list_workloads() -> tuple[str, ...]:
    return tuple(_MODULES)


def _module(name: str) -> ModuleType:
    if name not in _MODULES:
        raise bad_value("workload", name, f"choose one of {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name])


def workload_config(name: str, *, data_dir: str | None = None, **data_overrides: object) -> WorkloadConfig:
    """The default config of workload ``name``; ``data_dir`` is required by ``cifar10``."""
    module = _module(name)
    if name == "cifar10":
        return module.default_config(data_dir=data_dir, **data_overrides)
    if data_dir is not None:
        raise bad_value("data_dir", data_dir, f"only cifar10 reads a folder; drop it for {name}")
    return module.default_config(**data_overrides)


def build_workload(config: WorkloadConfig, *, seed: int) -> Workload:
    """Build the tensors of ``config`` for one seed (the replicate)."""
    return _module(config.name).build(config, seed=seed)
