"""Workloads: data, host and host pretraining, deterministic given a seed.

==================  ===========  ===============================================
name                topology     data
==================  ===========  ===============================================
``synthetic-cnn``   cnn          generated 16x16 images, planted context gating
``synthetic-seq``   transformer  generated tokens: associative recall + bigrams
``digits``          cnn          scikit-learn's bundled 8x8 digits (no download)
``cifar10``         cnn          a local CIFAR-10 python-pickle folder (no download)
==================  ===========  ===============================================
"""

from __future__ import annotations

from esper_ab.episodes.workloads._base import (
    IGNORE_INDEX,
    PretrainConfig,
    Workload,
    WorkloadConfig,
    accuracy_counts,
    config_hash,
    task_loss,
)
from esper_ab.episodes.workloads._base import _jsonable as jsonable
from esper_ab.episodes.workloads._registry import build_workload, list_workloads, workload_config

__all__ = [
    "jsonable",
    "IGNORE_INDEX",
    "PretrainConfig",
    "Workload",
    "WorkloadConfig",
    "accuracy_counts",
    "build_workload",
    "config_hash",
    "list_workloads",
    "task_loss",
    "workload_config",
]
