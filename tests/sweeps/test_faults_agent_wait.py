"""No fixed deadline a loaded machine can miss (issue 19, item 7).

``jobs/submit.py`` waited a fixed 90 s for a fresh head's job agent; under load it gave up.
The wait is now ``--agent-wait`` / ``$ESPER_AB_AGENT_WAIT_S`` (default 600 s), and it says
what it waits for. The retry loop is exercised against a client object whose
``submit_job`` raises the very error Ray's ``JobSubmissionClient`` raises before its agent
registers (a real head is ``test_sweeps_jobs.py``'s, slow).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))
import submit  # noqa: E402


class _AgentLater:
    """Answers like a head whose job agent registers after ``n`` tries."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def submit_job(self, *, entrypoint: str, runtime_env: dict) -> str:
        self.calls += 1
        if self.calls <= self.n:
            raise RuntimeError("No available agent to submit job, please try again later.")
        return "raysubmit_1"


def test_the_default_wait_is_minutes_and_configurable(monkeypatch):
    monkeypatch.delenv(submit.AGENT_WAIT_VAR, raising=False)
    assert submit.agent_wait_s() == 600.0
    monkeypatch.setenv(submit.AGENT_WAIT_VAR, "1200")
    assert submit.agent_wait_s() == 1200.0
    assert submit.agent_wait_s("30") == 30.0            # --agent-wait wins
    for bad in ("0", "-5", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match="agent wait"):
            submit.agent_wait_s(bad)


def test_it_waits_for_the_agent_and_says_so(monkeypatch):
    monkeypatch.setattr(submit.time, "sleep", lambda s: None)
    said: list[str] = []
    client = _AgentLater(3)
    job = submit._submit_when_ready(client, "true", {}, timeout_s=600.0,
                                    address="http://127.0.0.1:8265", say=said.append)
    assert job == "raysubmit_1" and client.calls == 4
    assert len(said) == 1 and "waiting for the job agent of http://127.0.0.1:8265" in said[0]


def test_it_gives_up_after_the_limit_with_a_hint(monkeypatch):
    clock = iter(float(t) for t in range(0, 10_000, 10))
    monkeypatch.setattr(submit.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(submit.time, "sleep", lambda s: None)
    with pytest.raises(TimeoutError, match="--agent-wait"):
        submit._submit_when_ready(_AgentLater(10**6), "true", {}, timeout_s=100.0,
                                  say=lambda text: None)


def test_other_errors_are_not_retried():
    class _Refuses:
        def submit_job(self, **kw):
            raise RuntimeError("bad runtime_env")

    with pytest.raises(RuntimeError, match="bad runtime_env"):
        submit._submit_when_ready(_Refuses(), "true", {}, timeout_s=600.0, say=print)
