"""Workloads: data, host, seed catalog and host pretraining, deterministic given a seed.

Every workload is a :class:`WorkloadPlugin`, found by name (entry points of group
``esper_ab.workloads``) or by ``module:attribute`` (``docs/PLUGINS.md``). esper-ab's own:

==================  ===========  ===============================================
name                catalog      data
==================  ===========  ===============================================
``synthetic-cnn``   cnn          generated 16x16 images, planted context gating
``synthetic-seq``   transformer  generated tokens: associative recall + bigrams
``digits``          cnn          scikit-learn's bundled 8x8 digits (no download)
``cifar10``         cnn          a local CIFAR-10 python-pickle folder (no download)
==================  ===========  ===============================================

``contracts`` (imported on its own) checks a workload before anything runs.
"""

from __future__ import annotations

from esper_ab.episodes.workloads._base import (
    IGNORE_INDEX,
    PretrainConfig,
    Workload,
    WorkloadConfig,
    accuracy_counts,
    config_hash,
    correct_flags,
    task_loss,
)
from esper_ab.episodes.workloads._base import _jsonable as jsonable
from esper_ab.episodes.workloads._plugin import Options, WorkloadData, WorkloadPlugin
from esper_ab.episodes.workloads._registry import (
    ENTRY_POINT_GROUP,
    build_workload,
    list_workloads,
    resolve_workload,
    workload_config,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "IGNORE_INDEX",
    "Options",
    "PretrainConfig",
    "Workload",
    "WorkloadConfig",
    "WorkloadData",
    "WorkloadPlugin",
    "accuracy_counts",
    "build_workload",
    "config_hash",
    "correct_flags",
    "jsonable",
    "list_workloads",
    "resolve_workload",
    "task_loss",
    "workload_config",
]
