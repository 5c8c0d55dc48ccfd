"""The plug-in API: run the placebo-controlled study on your own model.

A workload is a :class:`WorkloadPlugin`: a host (any ``nn.Module`` satisfying :class:`Host`,
or one wrapped in :class:`ModuleHost` by naming the submodules whose outputs are slots),
data (a loader deterministic per replicate, or fixed tensors), a :class:`BlueprintCatalog`
of seeds that declares which slots each fits (the placebo comes for free), and optionally a
loss and an accuracy (defaults: classification and next-token prediction), which also
score the held-out split that defines each seed's value.

A space names it by a registered name (entry point group ``esper_ab.workloads``, so
``pip install my-package`` is enough) or as ``module:attribute``; its ``data:`` options
pass through as its config, whose content hash keys the caches. :func:`check_workload`
(``esper-ab validate SPACE.yaml``) checks the contract before anything runs. esper-ab's
own workloads are plug-ins of exactly this kind. Guide: ``docs/PLUGINS.md``.
"""

from __future__ import annotations

from esper_ab.episodes.blueprints import (
    PLACEBO,
    Blueprint,
    BlueprintCatalog,
    get_catalog,
    list_catalogs,
    register_catalog,
)
from esper_ab.episodes.hosts import Host, ModuleHost, SlotHook
from esper_ab.episodes.workloads import (
    ENTRY_POINT_GROUP,
    IGNORE_INDEX,
    Options,
    PretrainConfig,
    WorkloadConfig,
    WorkloadData,
    WorkloadPlugin,
    accuracy_counts,
    correct_flags,
    list_workloads,
    resolve_workload,
    task_loss,
    workload_config,
)
from esper_ab.episodes.workloads.contracts import ContractError, ContractReport, check_workload

__all__ = [
    "ENTRY_POINT_GROUP",
    "IGNORE_INDEX",
    "PLACEBO",
    "Blueprint",
    "BlueprintCatalog",
    "ContractError",
    "ContractReport",
    "Host",
    "ModuleHost",
    "Options",
    "PretrainConfig",
    "SlotHook",
    "WorkloadConfig",
    "WorkloadData",
    "WorkloadPlugin",
    "accuracy_counts",
    "check_workload",
    "correct_flags",
    "get_catalog",
    "list_catalogs",
    "list_workloads",
    "register_catalog",
    "resolve_workload",
    "task_loss",
    "workload_config",
]
