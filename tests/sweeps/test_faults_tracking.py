"""A tracking server that dies is a failure in bounded time (issue 19, item 4).

A real ``mlflow server`` on 127.0.0.1 is killed by its PID while a real sweep (real Ray, a
real Optuna journal) logs to it. The sweep must notice within ``ESPER_AB_TRACKING_TIMEOUT_S``
(set low here), stop with one line naming the server, and leave ``state.json`` "failed";
after the server is restarted on the same store, ``--resume`` finishes exactly the sweep's
trials with no duplicate. A SIGINT while MLflow retries ends the sweep (before the fix two
SIGINTs did not). Every process a test starts is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sweep_helpers import finish_or_dump, free_port, write_space

from esper_ab.errors import ConfigError
from esper_ab.study._tracking_watch import server_answers, tracking_timeout_s

HERE = Path(__file__).resolve().parent
N = 4
_PROCS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_what_we_started():
    yield
    while _PROCS:
        proc = _PROCS.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


class Server:
    """``mlflow server`` on a fixed port and store, started and killed by PID."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--backend-store-uri",
             f"sqlite:///{self.folder}/server.db", "--artifacts-destination",
             str(self.folder / "artifacts"), "--workers", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        _PROCS.append(self.proc)
        deadline = time.monotonic() + 120
        while not server_answers(self.url):
            assert self.proc.poll() is None and time.monotonic() < deadline, "no server"
            time.sleep(0.5)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)       # the server dies, as in the probe
        self.proc.wait(timeout=30)

    def rest(self, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(f"{self.url}{path}",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"},
                                     method="POST" if body else "GET")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def runs(self, experiment: str) -> list[dict]:
        try:
            exp = self.rest("/api/2.0/mlflow/experiments/get-by-name?experiment_name="
                            + experiment)["experiment"]["experiment_id"]
        except OSError:
            return []
        out = self.rest("/api/2.0/mlflow/runs/search",
                        {"experiment_ids": [exp], "max_results": 1000})
        return out.get("runs", [])


def _children(runs: list[dict]) -> list[dict]:
    return [r for r in runs
            if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]


def _driver(tmp: Path, space: Path, url: str, *extra: str, wait_s: str) -> subprocess.Popen:
    env = {**os.environ, "ESPER_AB_TRACKING_TIMEOUT_S": wait_s}
    proc = subprocess.Popen([sys.executable, str(HERE / "kill_driver.py"), str(space), url,
                             str(tmp / "cache"), *extra], cwd=tmp, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    _PROCS.append(proc)
    return proc


def _space(tmp: Path, name: str) -> Path:
    return write_space(tmp, name=name, num_samples=N, max_concurrent=1, replicates=2,
                       strategies=[{"name": "exponent",
                                    "params": {"a": {"low": 0.0, "high": 1.0}}}])


def _wait_for_a_child(server: Server, name: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not _children(server.runs(name)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.5)


def test_the_timeout_is_configurable_and_checked(monkeypatch):
    monkeypatch.delenv("ESPER_AB_TRACKING_TIMEOUT_S", raising=False)
    assert tracking_timeout_s() == 60.0
    monkeypatch.setenv("ESPER_AB_TRACKING_TIMEOUT_S", "7.5")
    assert tracking_timeout_s() == 7.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("ESPER_AB_TRACKING_TIMEOUT_S", bad)
        with pytest.raises(ConfigError, match="ESPER_AB_TRACKING_TIMEOUT_S"):
            tracking_timeout_s()


@pytest.mark.slow
def test_a_dying_server_stops_the_sweep_in_one_line_and_resume_finishes(tmp_path):
    server = Server(tmp_path)
    server.start()
    space = _space(tmp_path, "t_dying")
    proc = _driver(tmp_path, space, server.url, wait_s="8")
    _wait_for_a_child(server, "t_dying", proc)
    server.kill()
    out, err = finish_or_dump(proc, 240)     # a hang is a failure, not a wait
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err and "NoneType" not in err
    lines = [x for x in err.splitlines() if x.startswith("esper-ab: error")]
    assert len(lines) == 1 and server.url in lines[0] and "has not answered" in lines[0]
    state = json.loads((tmp_path / "esper_ab_sweeps" / "t_dying" / "state.json").read_text())
    assert state["status"] == "failed" and "has not answered" in state["reason"]

    server.start()                                  # the same store, the same port
    again = _driver(tmp_path, space, server.url, "--resume", wait_s="60")
    out, err = finish_or_dump(again, 400)
    assert again.returncode == 0, err[-3000:]
    runs = server.runs("t_dying")
    kids = _children(runs)
    trial_ids = [t["value"] for r in kids for t in r["data"]["tags"]
                 if t["key"] == "esper_ab.trial_id"]
    assert len(kids) == N and len(set(trial_ids)) == N           # no duplicate
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_sigint_is_honoured_while_mlflow_retries(tmp_path):
    server = Server(tmp_path)
    server.start()
    space = _space(tmp_path, "t_sigint")
    proc = _driver(tmp_path, space, server.url, wait_s="600")   # the watch stays quiet
    _wait_for_a_child(server, "t_sigint", proc)
    server.kill()
    time.sleep(2.0)                                 # MLflow's client is retrying by now
    os.kill(proc.pid, signal.SIGINT)                # one Ctrl-C
    out, err = finish_or_dump(proc, 120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    state = json.loads((tmp_path / "esper_ab_sweeps" / "t_sigint" / "state.json").read_text())
    assert state["status"] == "interrupted"
