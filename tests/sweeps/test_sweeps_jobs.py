"""A sweep submitted as a Ray Job (JobSubmissionClient) to a local head with token auth;
the entrypoint runs under this venv's interpreter and joins the cluster via RAY_ADDRESS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from sweep_helpers import free_port, write_space

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def test_sweep_runs_as_a_ray_job(tmp_path):
    pytest.importorskip("aiohttp_cors")          # ray[default]: dashboard + job server
    space = write_space(tmp_path, name="as_job", num_samples=2, replicates=2)
    proc = subprocess.run([sys.executable, str(HERE / "job_submit_run.py"), str(tmp_path),
                           str(space), str(free_port())],
                          cwd=HERE, capture_output=True, text=True, timeout=720)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["status"] == "SUCCEEDED", info["logs"]
    assert "esper-ab job: RAY_ADDRESS=" in info["head"] and "auth token" in info["head"]
    assert sys.executable in info["head"]                     # the venv interpreter
    assert "Verdict:" in info["logs"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    df = mlflow.search_runs(experiment_names=["as_job"])
    assert len(df) == 3 and set(df["status"]) == {"FINISHED"}
