"""Submit an esper-ab sweep as a Ray Job through the Python ``JobSubmissionClient``.

    python jobs/submit.py --address http://HEAD:8265 SPACE.yaml [--wait] \
        [--python /path/to/cluster/venv/bin/python] [-- esper-ab sweep options]

``--python`` is the interpreter on the cluster that has esper-ab installed (default: this
one, which is right for a local head). Token auth is prepared as ``esper_ab.study.auth`` says.

A freshly started head registers its job agent some time after it answers; on a loaded
machine that took more than 90 s. Submission waits for the agent up to ``--agent-wait``
seconds (default ``ESPER_AB_AGENT_WAIT_S``, else 600), saying on stderr what it waits for.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_WAIT_VAR = "ESPER_AB_AGENT_WAIT_S"
DEFAULT_AGENT_WAIT_S = 600.0


def agent_wait_s(value: float | str | None = None) -> float:
    """How long to wait for the head's job agent: ``value``, else ``$ESPER_AB_AGENT_WAIT_S``,
    else 600 s. A value that is not a positive number is one clear error."""
    raw = value if value is not None else os.environ.get(AGENT_WAIT_VAR, DEFAULT_AGENT_WAIT_S)
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"agent wait {raw!r} is invalid: give a positive number of seconds "
                         f"(--agent-wait, or {AGENT_WAIT_VAR})")
    return seconds


def submit_sweep(address: str, space: str, sweep_args: list[str] | None = None, *,
                 python: str = sys.executable, working_dir: str | None = str(REPO),
                 env_vars: dict[str, str] | None = None,
                 agent_wait: float | str | None = None) -> tuple[object, str]:
    """Submit ``jobs/sweep_job.py SPACE [args]``; returns (client, job id). ``agent_wait``:
    seconds to wait for the head's job agent (``agent_wait_s``)."""
    timeout_s = agent_wait_s(agent_wait)
    import yaml
    from ray.job_submission import JobSubmissionClient

    from esper_ab.study.auth import job_client_auth

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
    return client, _submit_when_ready(client, cmd, runtime_env, timeout_s=timeout_s,
                                      address=address)


def _submit_when_ready(client, cmd: str, runtime_env: dict, *, timeout_s: float,
                       address: str = "the head", say=None) -> str:
    """Submit, retrying while a freshly started head has no job agent registered yet; says
    once what it waits for, then every minute, and gives up after ``timeout_s``."""
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    start = time.monotonic()
    next_say = start
    while True:
        try:
            return client.submit_job(entrypoint=cmd, runtime_env=runtime_env)
        except RuntimeError as exc:  # "No available agent to submit job, please try again"
            waited = time.monotonic() - start
            if "No available agent" not in str(exc):
                raise
            if waited > timeout_s:
                raise TimeoutError(f"{address} registered no job agent in {timeout_s:.0f} s: "
                                   f"the head may be overloaded or its dashboard agent down; "
                                   f"wait longer with --agent-wait or {AGENT_WAIT_VAR}") from None
            if time.monotonic() >= next_say:
                say(f"waiting for the job agent of {address} to register ({waited:.0f} s of "
                    f"at most {timeout_s:.0f} s)")
                next_say += 60.0
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
    ap.add_argument("--agent-wait", default=None, metavar="SECONDS",
                    help=f"wait this long for a fresh head's job agent (default: "
                         f"${AGENT_WAIT_VAR}, else {DEFAULT_AGENT_WAIT_S:.0f})")
    ap.add_argument("sweep_args", nargs=argparse.REMAINDER,
                    help="options for esper-ab sweep (after --)")
    args = ap.parse_args()
    extra = [a for a in args.sweep_args if a != "--"]
    try:
        wait_s = agent_wait_s(args.agent_wait)
    except ValueError as exc:
        ap.error(str(exc))
    client, job_id = submit_sweep(args.address, args.space, extra, python=args.python,
                                  agent_wait=wait_s)
    print(f"submitted {job_id}")
    if not args.wait:
        return 0
    status = wait(client, job_id)
    print(client.get_job_logs(job_id))
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
