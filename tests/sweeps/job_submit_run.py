"""Run by test_sweeps_jobs.py in a fresh interpreter: a local Ray head with its dashboard and
token authentication, a sweep submitted to it as a Ray Job through jobs/submit.py
(JobSubmissionClient), waited for. Prints one JSON line: the job's status and log tail."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="eab", dir="/tmp")
REPO = Path(__file__).resolve().parents[2]


def main(folder: str, space: str, port: int) -> int:
    sys.path.insert(0, str(REPO / "jobs"))
    from ray.cluster_utils import Cluster
    from submit import submit_sweep, wait
    from sweep_helpers import free_port

    # The job agent's own port: Ray's default (52365) is fixed, so a second head on the
    # machine (another suite beside this one) never gets its job agent; and a bind(0)
    # probe's port can be handed out again before the agent binds it (free_port).
    agent_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": port, "dashboard_agent_listen_port": agent_port})
    try:
        client, job_id = submit_sweep(
            f"http://127.0.0.1:{port}", space,
            ["--tracking-uri", f"sqlite:///{folder}/mlflow.db", "--storage-dir",
             f"{folder}/state", "--verbose", "0"],
            python=sys.executable, working_dir=str(REPO),
            agent_wait=300)     # with the job's 300 s, inside the test's 720 s: a failure
                                # is reported, not killed
        status = wait(client, job_id, timeout_s=300, poll_s=1.0)
        logs = client.get_job_logs(job_id)
        print(json.dumps({"status": status, "job_id": job_id, "head": logs[:2000],
                          "logs": logs[-4000:]}))
        return 0
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
