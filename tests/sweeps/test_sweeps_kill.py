"""Stop a sweep driver with SIGKILL, SIGTERM and SIGINT at several points (recording,
mid-trial, between trials), then ``--resume``: the sweep completes with

- exactly ``num_samples`` trials (MLflow child runs and counted Optuna trials), each
  config evaluated once, no duplicated trial id;
- no run left RUNNING, no FINISHED run changed by a later resume;
- the Ray helpers of a SIGKILLed driver gone (its watchdog stops them), and every
  listening socket of a local sweep on the loopback interface;
- SIGTERM and SIGINT end the driver with status 130 and "interrupted".

No wall-clock bound is asserted: the waits are hang guards (minutes) whose failure says
what hung, so a loaded machine cannot fail these tests.

Real Ray (embedded, one per driver), real MLflow (sqlite), a real Optuna journal; every
process a test starts is stopped by its PID. A driver start costs one ``ray.init``, so one
sweep is stopped several times in a row instead of once per case.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from sweep_helpers import write_space

from esper_ab.study.resume import SWEEP_RUN, count_final
from esper_ab.study.studies import sweep_study_name

pytestmark = pytest.mark.slow
ESPER_AB = str(Path(sys.executable).with_name("esper-ab"))
HERE = Path(__file__).resolve().parent
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _db_rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute(sql).fetchall()
    except sqlite3.OperationalError:       # tables not created yet
        return []


def _children(db: Path, status: str) -> int:
    return len(_db_rows(db, "select r.run_uuid from runs r join tags t on t.run_uuid = "
                            "r.run_uuid where t.key = 'mlflow.parentRunId' and "
                            f"r.status = '{status}'"))


def _cmd(tmp: Path, space: Path, *extra: str, cli: bool) -> list[str]:
    uri, cache = f"sqlite:///{tmp / 'mlflow.db'}", str(tmp / "cache")
    if cli:
        return [ESPER_AB, "sweep", str(space), "--tracking-uri", uri, "--no-progress",
                "--cache-dir", cache, *extra]
    return [sys.executable, str(HERE / "kill_driver.py"), str(space), uri, cache, *extra]


_DRIVERS: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_leftover_drivers():
    """A failed assertion must not leave a driver (and its Ray) running: stop it by PID;
    its watchdog then stops the Ray helpers."""
    yield
    while _DRIVERS:
        proc = _DRIVERS.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


class Driver:
    """One sweep driver subprocess in its own session: ``esper-ab sweep`` (``cli``: at replay
    fidelity it batches configs per Tune trial), or ``kill_driver.py`` (one config per Tune
    trial, a child run each)."""

    def __init__(self, tmp: Path, space: Path, *extra: str, cli: bool = False) -> None:
        self.tmp, self.db = tmp, tmp / "mlflow.db"
        self.cmd = _cmd(tmp, space, *extra, cli=cli)
        self.log = (tmp / f"driver-{time.monotonic_ns()}.log").open("w+")
        self.proc = subprocess.Popen(self.cmd, cwd=tmp, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "RAY_AIR_NEW_OUTPUT": "0"},
                                     start_new_session=True)
        _DRIVERS.append(self.proc)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_for(self, what, *, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, \
                f"the sweep hung: no progress in {timeout:.0f} s\n{self.output()[-3000:]}"
            time.sleep(0.2)

    def stop(self, sig: int, *, hang_guard: float = 180) -> int:
        """Send ``sig`` and return the exit status. ``hang_guard`` only tells a hung driver
        from a slow one on a loaded machine; how fast it exits is not asserted."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=hang_guard)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver hung: still running {hang_guard:.0f} s after signal "
                        f"{signal.Signals(sig).name}\n{self.output()[-3000:]}")
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def finish(self, *, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _folder(tmp: Path, name: str) -> Path:
    return tmp / "esper_ab_sweeps" / name


def _helpers(tmp: Path, name: str) -> list[psutil.Process]:
    """The live processes recorded in the sweep folder (Ray's helpers) and their children."""
    f = _folder(tmp, name) / "ray_helpers.json"
    try:
        entries = json.loads(f.read_text())["helpers"]
    except (OSError, ValueError, KeyError):
        return []
    out = []
    for e in entries:
        try:
            p = psutil.Process(e["pid"])
            if abs(p.create_time() - e["create_time"]) < 0.05:
                out += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    return out


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()} {p.status()} ppid={p.ppid()}")
        except psutil.Error:
            pass
    return out


def _wait_gone(procs: list[psutil.Process], hang_guard: float = 180) -> None:
    """The helpers of a killed driver end (its watchdog kills them). ``hang_guard`` only
    tells helpers left running for good from a slow watchdog on a loaded machine."""
    deadline = time.monotonic() + hang_guard
    while alive := _alive(procs):
        assert time.monotonic() < deadline, \
            f"the killed driver's Ray helpers were left running ({hang_guard:.0f} s): {alive}"
        time.sleep(0.2)


def _listening(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    out = []
    for p in procs:
        try:
            out += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            pass
    return out


def _finished_runs(db: Path) -> dict[str, tuple]:
    """FINISHED runs: id -> (end time, end reason, number of metric rows)."""
    rows = _db_rows(db, "select r.run_uuid, r.end_time, (select value from tags t where "
                        "t.run_uuid = r.run_uuid and t.key = 'esper_ab.end_reason'), (select "
                        "count(*) from metrics m where m.run_uuid = r.run_uuid) from runs r "
                        "where r.status = 'FINISHED'")
    return {r[0]: tuple(r[1:]) for r in rows}


def _check_done(tmp: Path, name: str, n: int, *, finalists: int = 0) -> None:
    """Every invariant after the last resume. Child runs: one per trial (``n``), or, when
    the sweep batched configs per Tune trial (tag ``esper_ab.search``), the ``finalists``."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    df = mlflow.search_runs(experiment_names=[name])
    assert set(df["status"]) == {"FINISHED"}, df[["status", "tags.esper_ab.end_reason"]]
    parents = df[df["tags.esper_ab.role"] == "sweep"]
    kids = df[df["tags.esper_ab.role"] == "trial"]
    assert len(parents) == 1
    batched = "tags.esper_ab.search" in parents and \
        parents["tags.esper_ab.search"].iloc[0] == "ray-tune-batched"
    k = finalists if batched else n
    assert len(kids) == k and kids["tags.esper_ab.trial_id"].is_unique
    assert sorted(kids["tags.esper_ab.trial_number"].astype(int)) == list(range(1, k + 1))
    configs = kids[["params.strategy", "params.threshold", "params.param.a"]]
    assert not configs.duplicated().any(), configs                 # each config once
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(_folder(tmp, name) / "optuna.journal")))
    parent = parents["run_id"].iloc[0]
    study = optuna.load_study(study_name=sweep_study_name(name, parent), storage=storage)
    assert count_final(study, parent) == n
    done = [t for t in study.trials if t.user_attrs.get(SWEEP_RUN) == parent
            and t.state == optuna.trial.TrialState.COMPLETE]
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == len(done) == n


def test_kill_term_int_at_trials_then_resume(tmp_path):
    """SIGKILL mid-trial, SIGTERM between trials, SIGINT mid-trial, each followed by
    --resume; the last resume completes the sweep with every invariant."""
    name, n = "killed", 6
    space = write_space(tmp_path, name=name, num_samples=n, max_concurrent=1, replicates=2,
                        strategies=[{"name": "exponent",
                                     "params": {"a": {"low": 0.0, "high": 1.0}}}])
    db = tmp_path / "mlflow.db"

    # 1. SIGKILL while the second trial runs; the socket check happens while it runs.
    first = Driver(tmp_path, space)
    first.wait_for(lambda: _children(db, "FINISHED") >= 1 and _children(db, "RUNNING") >= 1)
    helpers = _helpers(tmp_path, name)
    assert helpers, "the sweep recorded no Ray helper"
    listening = _listening([psutil.Process(first.proc.pid), *helpers])
    assert listening and all(ip in LOOPBACK for _, ip, _ in listening), listening
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if token.is_file() and token.stat().st_uid == os.getuid():
        assert token.stat().st_mode & 0o077 == 0, oct(token.stat().st_mode)   # 0600
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    _wait_gone(helpers)
    before = _finished_runs(db)

    # 2. --resume, SIGTERM right after a trial finished (between trials).
    second = Driver(tmp_path, space, "--resume")
    have = _children(db, "FINISHED")
    second.wait_for(lambda: _children(db, "FINISHED") > have)
    assert second.stop(signal.SIGTERM) == 130, second.output()
    assert "interrupted" in second.output()
    assert _children(db, "RUNNING") == 0
    after = _finished_runs(db)
    assert all(after.get(k) == v for k, v in before.items())     # no FINISHED run changed
    before = after

    # 3. --resume, SIGINT while a trial runs: the driver stops the trial and exits (130),
    #    the running trial's run closed (not left RUNNING).
    third = Driver(tmp_path, space, "--resume")
    have = _children(db, "FINISHED")
    third.wait_for(lambda: _children(db, "RUNNING") >= 1 and _children(db, "FINISHED") >= have)
    assert third.stop(signal.SIGINT) == 130, third.output()
    assert "interrupted" in third.output()
    assert _children(db, "RUNNING") == 0
    after = _finished_runs(db)
    assert all(after.get(k) == v for k, v in before.items())
    before = after

    # 4. --resume to the end.
    last = Driver(tmp_path, space, "--resume")
    assert last.finish() == 0, last.output()
    after = _finished_runs(db)
    assert all(after.get(k) == v for k, v in before.items())
    _check_done(tmp_path, name, n)
    again = subprocess.run(_cmd(tmp_path, space, "--resume", cli=True), cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already finished" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def _optuna_states(tmp: Path, name: str) -> list[str]:
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
            str(_folder(tmp, name) / "optuna.journal")))
        return [t.state.name for s in storage.get_all_studies()     # one study per run
                for t in storage.get_all_trials(s._study_id)]
    except Exception:  # noqa: BLE001 - no study yet
        return []


def test_kill_during_recording_and_between_batches_then_resume(tmp_path):
    """``esper-ab sweep`` as users run it (replay fidelity: configs batched per Tune trial,
    the finalists logged as child runs at the end): SIGKILL while the traces are recorded
    (real tiny episodes), --resume and SIGINT once the first batch is in, --resume to the
    end. The recording resumes from the episode cache; every config is evaluated once."""
    name, n = "killed_rec", 8
    space = write_space(tmp_path, name=name, num_samples=n, max_concurrent=1, replicates=2,
                        workloads=[{"name": "synthetic-cnn", "episode": {"size": "tiny"}}],
                        traces={"source": "record"},
                        objectives=[{"metric": "realized_utility"}],
                        strategies=[{"name": "exponent",
                                     "params": {"a": {"low": 0.0, "high": 1.0}}}])
    db = tmp_path / "mlflow.db"
    first = Driver(tmp_path, space, cli=True)
    first.wait_for(lambda: bool(_helpers(tmp_path, name)) and bool(
        _db_rows(db, "select run_uuid from runs where status = 'RUNNING'")))
    time.sleep(2.0)                                  # inside the recording task
    assert not _optuna_states(tmp_path, name)        # no config asked yet
    helpers = _helpers(tmp_path, name)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    _wait_gone(helpers)

    second = Driver(tmp_path, space, "--resume", cli=True)
    second.wait_for(lambda: 0 < _optuna_states(tmp_path, name).count("COMPLETE") < n,
                    timeout=600)
    assert second.stop(signal.SIGINT) == 130, second.output()    # Ctrl-C, through the CLI
    assert "esper-ab: interrupted" in second.output()
    assert _children(db, "RUNNING") == 0

    last = Driver(tmp_path, space, "--resume", cli=True)
    assert last.finish() == 0, last.output()
    _check_done(tmp_path, name, n, finalists=2)     # batched: the top_k finalists
