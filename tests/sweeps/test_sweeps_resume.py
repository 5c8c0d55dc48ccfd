"""Interrupt a sweep driver (SIGINT, as Ctrl-C), then --resume: it completes, with no
duplicate runs and none left RUNNING."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from sweep_helpers import write_space

pytestmark = pytest.mark.slow


def _finished_children(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                             "where t.key = 'mlflow.parentRunId' and r.status = 'FINISHED'"
                             ).fetchone()[0]
    except sqlite3.OperationalError:       # tables not created yet
        return 0


def test_interrupted_sweep_resumes_without_duplicates(tmp_path):
    space = write_space(tmp_path, name="resumable", num_samples=4, max_concurrent=1,
                        replicates=2)
    cmd = [str(Path(sys.executable).with_name("esper-ab")), "sweep", str(space),
           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--verbose", "0"]
    env = {**os.environ, "RAY_AIR_NEW_OUTPUT": "0"}
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while _finished_children(tmp_path / "mlflow.db") < 2:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out
    assert "interrupted" in out

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    df = mlflow.search_runs(experiment_names=["resumable"])
    assert "RUNNING" not in set(df["status"])                 # closed with a reason
    parent = df[df["tags.esper_ab.role"] == "sweep"]
    assert list(parent["status"]) == ["FAILED"]
    assert parent["tags.esper_ab.end_reason"].iloc[0].startswith("interrupted")
    done_before = set(df[(df["tags.esper_ab.role"] == "trial")
                         & (df["status"] == "FINISHED")]["tags.esper_ab.trial_id"])
    assert len(done_before) >= 2

    second = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    df = mlflow.search_runs(experiment_names=["resumable"])
    assert set(df["status"]) == {"FINISHED"}
    parents = df[df["tags.esper_ab.role"] == "sweep"]
    kids = df[df["tags.esper_ab.role"] == "trial"]
    assert len(parents) == 1 and parents["run_id"].iloc[0] == parent["run_id"].iloc[0]
    assert len(kids) == 4 and kids["tags.esper_ab.trial_id"].is_unique
    assert done_before <= set(kids["tags.esper_ab.trial_id"])
    assert sorted(kids["tags.esper_ab.trial_number"].astype(int)) == [1, 2, 3, 4]

    again = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and "already finished" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
