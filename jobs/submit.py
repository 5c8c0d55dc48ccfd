"""Submit an esper-ab sweep as a Ray Job through the Python ``JobSubmissionClient``.

    python jobs/submit.py --address http://HEAD:8265 SPACE.yaml [--wait] \
        [--python /path/to/cluster/venv/bin/python] [-- esper-ab sweep options]

``--python`` is the interpreter on the cluster that has esper-ab installed (default: this
one, which is right for a local head). Token auth is prepared as ``esper_ab.sweeps.auth`` says.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submit_sweep(address: str, space: str, sweep_args: list[str] | None = None, *,
                 python: str = sys.executable, working_dir: str | None = str(REPO),
                 env_vars: dict[str, str] | None = None) -> tuple[object, str]:
    """Submit ``jobs/sweep_job.py SPACE [args]``; returns (client, job id)."""
    import yaml
    from ray.job_submission import JobSubmissionClient

    from esper_ab.sweeps.auth import job_client_auth

    job_client_auth()
    runtime_env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **(env_vars or {})}
    if working_dir is not None:
        runtime_env["working_dir"] = working_dir
        entry = "jobs/sweep_job.py"
    else:
        runtime_env.pop("excludes", None)
        entry = str(REPO / "jobs" / "sweep_job.py")
    cmd = " ".join(shlex.quote(x) for x in [python, entry, space, *(sweep_args or [])])
    client = JobSubmissionClient(address)
    return client, _submit_when_ready(client, cmd, runtime_env)


def _submit_when_ready(client, cmd: str, runtime_env: dict, *, timeout_s: float = 90.0) -> str:
    """Submit, retrying while a freshly started head has no job agent registered yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=cmd, runtime_env=runtime_env)
        except RuntimeError as exc:  # "No available agent to submit job, please try again"
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def wait(client, job_id: str, *, timeout_s: float = 3600.0, poll_s: float = 2.0) -> str:
    """Poll until the job ends; returns its final status name."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        if status in TERMINAL:
            return status
        time.sleep(poll_s)
    raise TimeoutError(f"job {job_id} still running after {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", required=True, help="the head's dashboard, http://HEAD:8265")
    ap.add_argument("space", help="SPACE.yaml, relative to the repo (it is uploaded)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter on the cluster with esper-ab installed")
    ap.add_argument("--wait", action="store_true", help="wait and print the job's logs")
    ap.add_argument("sweep_args", nargs=argparse.REMAINDER,
                    help="options for esper-ab sweep (after --)")
    args = ap.parse_args()
    extra = [a for a in args.sweep_args if a != "--"]
    client, job_id = submit_sweep(args.address, args.space, extra, python=args.python)
    print(f"submitted {job_id}")
    if not args.wait:
        return 0
    status = wait(client, job_id)
    print(client.get_job_logs(job_id))
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
