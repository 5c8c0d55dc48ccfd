"""Fixtures of the sweep tests: one local Ray per module that needs it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs, shared by the tests of one module, shut down after it."""
    ray = pytest.importorskip("ray")
    import sweep_helpers
    from ray import cloudpickle

    from esper_ab.study.runtime import connect_ray

    cloudpickle.register_pickle_by_value(sweep_helpers)
    if ray.is_initialized():
        ray.shutdown()
    connect_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
