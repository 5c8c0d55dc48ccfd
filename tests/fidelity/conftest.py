"""Fixtures of the multi-fidelity tests: tiny real episodes recorded once per session."""

from __future__ import annotations

import os

import pytest
from fidelity_helpers import Recorded, space

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def recorded(tmp_path_factory) -> Recorded:
    """4 replicates of the tiny space (3 searched, 1 more for fresh confirmations)."""
    import torch

    from esper_ab.episodes.runner import run_episode
    from esper_ab.study.recording import episode_jobs
    from esper_ab.study.spec import parse_sweep_spec

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fidelity")
    cache, traces = root / ".esper_ab_cache", root / "traces"
    spec = parse_sweep_spec(space())
    reps = [0, 1, 2, 3]
    for job in episode_jobs(spec, replicates=reps):
        run_episode(job.config, replicate=job.replicate, cache_dir=cache).save(traces)
    return Recorded(root, cache, traces, tuple(reps))


@pytest.fixture(scope="session")
def evidence(recorded):
    """Replay evidence over the searched replicates (0, 1, 2)."""
    from esper_ab.replay import ReplayEvidence
    from esper_ab.study.recording import load_spec_traces
    from esper_ab.study.spec import parse_sweep_spec

    spec = parse_sweep_spec(space())
    return ReplayEvidence(load_spec_traces(spec, recorded.traces), folds=2)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs for one test module, shut down after it."""
    ray = pytest.importorskip("ray")
    from esper_ab.study.runtime import connect_ray

    if ray.is_initialized():
        ray.shutdown()
    connect_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()
