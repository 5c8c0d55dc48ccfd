"""The Ray-free parts of the sweep lifecycle, checked without Ray: the resume reconciliation
against a real Optuna study, the helper reaper against real processes, the preflight checks
and the token file's mode."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time

import optuna
import psutil
import pytest

from esper_ab.errors import ConfigError
from esper_ab.study._reaper import (
    HELPERS_FILE,
    Watchdog,
    helper_processes,
    reap_recorded,
    record_helpers,
)
from esper_ab.study.preflight import (
    check_ray_address,
    check_tracking_uri,
    not_a_file,
    usable_dir,
    writable_file,
)
from esper_ab.study.resume import (
    REUSE_RUN,
    SWEEP_RUN,
    TUNE_TRIAL_ID,
    TrialRun,
    count_final,
    reconcile,
    resumed_seed,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
PARENT = "parent-run"


def _study_with(states: list[str]) -> optuna.Study:
    """A study whose trial i ran as Tune trial ``t{i}`` of PARENT, left in ``states[i]``."""
    study = optuna.create_study(direction="maximize")
    for i, state in enumerate(states):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr(TUNE_TRIAL_ID, f"t{i}")
        trial.set_user_attr(SWEEP_RUN, PARENT)
        if state == "COMPLETE":
            study.tell(trial, 0.5)
        elif state == "FAIL":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return study


def _run(i: int, status: str, reason: str = "", value: float | None = 0.7) -> TrialRun:
    return TrialRun(f"run{i}", f"t{i}", status, reason,
                    {} if value is None else {"g2.balanced_accuracy": value})


def test_reconcile_counts_final_trials_and_recovers_what_mlflow_finished():
    study = _study_with(["COMPLETE", "RUNNING", "RUNNING", "RUNNING", "FAIL"])
    runs = [_run(0, "FINISHED"), _run(1, "FINISHED", value=0.9),
            _run(2, "FAILED", "trial crashed after 2 attempt(s): boom"),
            _run(3, "FAILED", "interrupted: resume with ...")]
    plan = reconcile(study, runs, sweep_run=PARENT, metrics=["g2.balanced_accuracy"])
    trials = study.get_trials(deepcopy=False)
    assert trials[1].state.name == "COMPLETE" and trials[1].value == 0.9   # from MLflow
    assert trials[2].state.name == "FAIL"                                  # crashed: counted
    assert trials[3].state.name == "FAIL"                                  # superseded
    rerun = trials[5]
    assert rerun.state.name == "WAITING"
    assert rerun.system_attrs["fixed_params"] == trials[3].params     # queued as it was
    assert rerun.user_attrs[REUSE_RUN] == "run3" and rerun.user_attrs[SWEEP_RUN] == PARENT
    assert (plan.done, plan.rerun, plan.told_from_mlflow) == (4, 1, 1)
    assert plan.remaining(6) == 2 and count_final(study, PARENT) == 4


def test_reconcile_twice_is_a_no_op_and_other_sweeps_are_left_alone():
    study = _study_with(["COMPLETE", "RUNNING"])
    foreign = study.ask()
    foreign.suggest_float("x", 0.0, 1.0)
    foreign.set_user_attr(SWEEP_RUN, "another-sweep")
    first = reconcile(study, [], sweep_run=PARENT, metrics=["g2.balanced_accuracy"])
    again = reconcile(study, [], sweep_run=PARENT, metrics=["g2.balanced_accuracy"])
    assert (first.done, first.rerun) == (1, 1) and (again.done, again.rerun) == (1, 0)
    assert study.get_trials(deepcopy=False)[2].state.name == "RUNNING"      # not ours
    assert sum(t.state.name == "WAITING" for t in study.trials) == 1         # queued once


def test_a_nan_objective_in_mlflow_is_told_as_a_failure():
    study = _study_with(["RUNNING"])
    reconcile(study, [_run(0, "FINISHED", value=math.nan)], sweep_run=PARENT,
              metrics=["g2.balanced_accuracy"])
    assert study.trials[0].state.name == "FAIL" and count_final(study, PARENT) == 1


def test_resumed_seed_differs_from_the_first_and_is_deterministic():
    assert resumed_seed(0, 5) != resumed_seed(0, 0) == resumed_seed(0, 0)
    assert resumed_seed(3, 7) == resumed_seed(3, 7)


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_recorded_helpers_of_a_dead_driver_are_stopped(tmp_path):
    proc = _sleeper()
    try:
        record_helpers(tmp_path, [psutil.Process(proc.pid)])
        data = (tmp_path / HELPERS_FILE).read_text()
        (tmp_path / HELPERS_FILE).write_text(data.replace(f'"driver": {os.getpid()}',
                                                          '"driver": 999999999'))
        assert reap_recorded(tmp_path) == 1
        assert proc.wait(timeout=10) is not None
        assert not (tmp_path / HELPERS_FILE).exists()
    finally:
        proc.kill()


def test_the_watchdog_is_never_counted_among_the_helpers():
    """The watchdog is known by its script's path (which moves with its package): a live
    one is a child of the driver but not a Ray helper, so it is neither recorded nor stopped
    as one, while any other child is."""
    proc = _sleeper()
    dog = Watchdog([])
    try:
        pids = {p.pid for p in helper_processes()}
        assert proc.pid in pids and dog.pid not in pids
        assert psutil.Process(dog.pid).is_running()
    finally:
        dog.close(wait_s=10)
        proc.kill()
        proc.wait(timeout=10)


def test_a_reused_pid_is_not_stopped(tmp_path):
    proc = _sleeper()
    try:
        record_helpers(tmp_path, [psutil.Process(proc.pid)])
        text = (tmp_path / HELPERS_FILE).read_text()
        ct = str(psutil.Process(proc.pid).create_time())
        (tmp_path / HELPERS_FILE).write_text(text.replace(ct, str(float(ct) - 100))
                                             .replace(f'"driver": {os.getpid()}',
                                                      '"driver": 999999999'))
        assert reap_recorded(tmp_path) == 0
        time.sleep(0.2)
        assert proc.poll() is None                       # another process: left alone
    finally:
        proc.kill()


def test_a_live_drivers_helpers_are_left_alone(tmp_path):
    proc = _sleeper()
    try:
        record_helpers(tmp_path, [psutil.Process(proc.pid)])   # the driver: this process
        assert reap_recorded(tmp_path) == 0 and proc.poll() is None
    finally:
        proc.kill()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_refuses_in_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    cases = [
        (lambda: check_ray_address(f"127.0.0.1:{_closed_port()}"), "nothing accepts"),
        (lambda: check_ray_address("ray://:10001"), "HOST:PORT"),
        (lambda: check_tracking_uri(f"http://127.0.0.1:{_closed_port()}"), "/health"),
        (lambda: check_tracking_uri(f"sqlite:///{tmp_path}/nope/m.db"), "does not exist"),
        (lambda: check_tracking_uri(f"sqlite:///{tmp_path}/m.db", existing=True),
         "does not exist"),
        (lambda: check_tracking_uri(f"sqlite:///{tmp_path}"), "not a file"),
        (lambda: usable_dir(tmp_path / "f", "--out"), "is a file"),
        (lambda: usable_dir("/proc/nope/x", "--out"), "cannot be created"),
        (lambda: writable_file(tmp_path / "no" / "w.yaml", "--out"), "does not exist"),
        (lambda: writable_file(tmp_path, "--out"), "is a folder"),
        (lambda: not_a_file(tmp_path / "f", "--cache-dir"), "is a file"),
    ]
    for call, match in cases:
        with pytest.raises(ConfigError, match=match) as err:
            call()
        assert "\n" not in str(err.value)
    assert not (tmp_path / "nope").exists() and not (tmp_path / "m.db").exists()
    check_ray_address(None)
    check_ray_address("local")
    check_tracking_uri(f"sqlite:///{tmp_path}/m.db")          # a new store in a real folder
    assert usable_dir(tmp_path / "new" / "dir", "--out").is_dir()


def test_the_token_file_ray_writes_is_made_private(tmp_path, monkeypatch):
    from esper_ab.study.runtime import _private_token_file

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    _private_token_file()
    assert token.stat().st_mode & 0o777 == 0o600


def test_an_embedded_ray_claims_one_token_first(tmp_path, monkeypatch):
    """``claim_token`` (run before every embedded ``ray.init``) creates the token Ray would
    create at ``~/.ray/auth_token``, once: 64 hex characters, 0600; an existing token, a
    token from the environment, a path the user named and auth switched off are all left
    alone."""
    from esper_ab.study.auth import claim_token

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    token = tmp_path / "home" / ".ray" / "auth_token"
    named = tmp_path / "named_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    claim_token()
    assert not named.exists() and not token.exists()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    claim_token()
    assert not token.exists()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-environment")
    monkeypatch.delenv("RAY_AUTH_MODE")
    claim_token()
    assert not token.exists()
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    claim_token()
    first = token.read_text()
    assert len(first) == 64 and int(first, 16) >= 0
    assert token.stat().st_mode & 0o777 == 0o600
    claim_token()                                  # a second command: the same token
    assert token.read_text() == first
