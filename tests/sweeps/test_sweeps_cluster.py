"""A sweep on a local 2-node Ray cluster (head + worker) with token authentication. The
worker declares one GPU, so trials asking for half a GPU are scheduled two at a time on it
(fractional scheduling), and, with no CUDA device behind the declared GPU, run on the CPU
(the fallback). The cluster runs in a fresh interpreter (two_node_sweep.py) so that its
auth mode and Ray temp dir are set before Ray is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


def test_fractional_gpu_trials_fall_back_to_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "two_node_sweep.py"), str(tmp_path)],
                          cwd=HERE, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["status"] == "FINISHED" and not info["still_connected"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    df = mlflow.search_runs(experiment_names=["two_nodes"])
    assert set(df["status"]) == {"FINISHED"}
    kids = df[df["tags.esper_ab.role"] == "trial"]
    assert len(kids) == 4
    # every trial got a share of the GPU, on the worker node that declares it ...
    assert set(kids["tags.esper_ab.node_id"]) == {info["gpu_node"]}
    assert info["gpu_node"] != info["head_node"]
    assert all(g not in ("", "[]") for g in kids["tags.esper_ab.gpu_ids"])
    # two trials held half of the one GPU at the same time (their runs overlap)
    spans = sorted(zip(kids["start_time"], kids["end_time"], strict=True))
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    # ... and, with no CUDA device behind it, ran on the CPU and said why
    assert set(kids["tags.esper_ab.device"]) == {"cpu"}
    assert all("CPU fallback" in n for n in kids["tags.esper_ab.device_note"])
