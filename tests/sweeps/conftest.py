"""Fixtures of the sweep tests: one local Ray per module that needs it, and a real
``mlflow server`` on 127.0.0.1 per test that needs one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sweep_helpers import free_port

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


@pytest.fixture()
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on a free loopback port (sqlite store in ``tmp_path``),
    stopped by its PID after the test."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up on {url}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)            # our own server, by its PID
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
