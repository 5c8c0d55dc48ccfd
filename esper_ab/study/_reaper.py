"""The helper processes of an embedded Ray, and what stops them when their driver dies.

An embedded ``ray.init()`` starts a GCS server, a raylet, agents and workers as children of
the driver. They outlive a driver killed with SIGKILL (measured: all 8 still there 20 s
later). Two things end them:

- a **watchdog**: a small process (this file run as a script: the standard library and
  psutil only, no esper-ab or Ray import)
  that reads the helpers' PIDs on a pipe from the driver. When the pipe closes -- the driver
  ended, however it ended -- it kills every recorded helper still alive (SIGKILL) and its
  descendants, then every process whose environment carries this Ray's tag
  (``ESPER_AB_RAY_TAG``, set while ``ray.init`` starts the helpers: workers a raylet starts
  later inherit it, and are found even once they hang from init), then exits. It ignores SIGINT and SIGTERM, so a
  Ctrl-C sent to the whole terminal process group does not stop it before its work;
- the **recorded PIDs**: the sweep folder keeps ``ray_helpers.json`` (PID and start time of
  each helper) while a sweep runs; the next start in that folder stops any still alive
  (the start time guards against a PID reused by another process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

__all__ = ["HELPERS_FILE", "TAG_VAR", "Watchdog", "forget_helpers", "helper_processes",
           "owner_tag", "reap_recorded", "record_helpers", "set_owner_tag", "stop_processes",
           "tagged_processes"]

HELPERS_FILE = "ray_helpers.json"
TAG_VAR = "ESPER_AB_RAY_TAG"    # in the environment of every process of one embedded Ray
_OWNER_TAG: list[str] = []


def set_owner_tag(tag: str) -> None:
    """The tag of the embedded Ray this process started last (see :data:`TAG_VAR`)."""
    _OWNER_TAG[:] = [tag]


def owner_tag() -> str | None:
    return _OWNER_TAG[0] if _OWNER_TAG else None


def tagged_processes(tag: str | None) -> list[psutil.Process]:
    """The live processes whose environment carries ``tag``: every helper of one embedded
    Ray, the workers a raylet starts later included (they inherit its environment), even
    once their parent is gone and they hang from init."""
    if not tag:
        return []
    out = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get(TAG_VAR) == tag and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


def _stop_all(procs: list[psutil.Process], tag: str | None) -> int:
    """The recorded helpers and their tree, then (three passes, workers may still be
    starting) every process of that Ray found by its tag."""
    n = stop_processes(procs) if procs else 0
    for _ in range(3):
        left = tagged_processes(tag)
        if not left:
            break
        n += stop_processes(left)
        time.sleep(0.3)
    return n
WATCHDOG_SCRIPT = "study/_reaper.py"
GRACE_S = 3.0


def _is_watchdog(p: psutil.Process) -> bool:
    try:
        return any(a.endswith(WATCHDOG_SCRIPT) for a in p.cmdline())
    except psutil.Error:
        return False


def helper_processes() -> list[psutil.Process]:
    """Every live descendant of this process but the watchdog (after ``ray.init``: Ray's
    helpers)."""
    try:
        return [p for p in psutil.Process().children(recursive=True)
                if p.is_running() and not _is_watchdog(p)]
    except psutil.Error:
        return []


def _identity(p: psutil.Process) -> dict[str, Any] | None:
    try:
        return {"pid": p.pid, "create_time": p.create_time(), "name": p.name()}
    except psutil.Error:
        return None


def _same_process(entry: dict[str, Any]) -> psutil.Process | None:
    """The live process of a recorded entry, or None (gone, or its PID reused)."""
    try:
        p = psutil.Process(int(entry["pid"]))
        if abs(p.create_time() - float(entry["create_time"])) > 0.05:
            return None
        return p if p.status() != psutil.STATUS_ZOMBIE else None
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None


def stop_processes(procs: Iterable[psutil.Process], *, grace_s: float = GRACE_S,
                   gentle: bool = False) -> int:
    """Stop the processes and their descendants: SIGKILL at once (the helpers of a dead
    driver hold nothing to save), or with ``gentle`` SIGTERM first and SIGKILL what is left
    after ``grace_s``; the number of processes that were alive."""
    alive = {p.pid: p for p in procs}
    children: dict[int, list[int]] = {}
    for q in psutil.process_iter(["ppid"]):          # one pass over /proc for the tree
        children.setdefault(q.info["ppid"] or 0, []).append(q.pid)
    todo = list(alive)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in alive:
                try:
                    alive[c] = psutil.Process(c)
                    todo.append(c)
                except psutil.Error:
                    pass
    targets = list(alive.values())
    left = targets
    if gentle:
        for p in targets:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, left = psutil.wait_procs(targets, timeout=grace_s)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=grace_s)
    return len(targets)


def record_helpers(folder: Path, procs: Iterable[psutil.Process]) -> None:
    entries = [e for e in (_identity(p) for p in procs) if e is not None]
    tmp = Path(folder) / f"{HELPERS_FILE}.tmp"
    tmp.write_text(json.dumps({"driver": os.getpid(), "tag": owner_tag(),
                               "helpers": entries}))
    tmp.replace(Path(folder) / HELPERS_FILE)


def forget_helpers(folder: Path) -> None:
    (Path(folder) / HELPERS_FILE).unlink(missing_ok=True)


def reap_recorded(folder: Path) -> int:
    """Stop the helpers a dead driver of this folder left behind; how many there were."""
    f = Path(folder) / HELPERS_FILE
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return 0
    driver = data.get("driver")
    if driver == os.getpid():
        return 0          # this process's own Ray: never ours to stop here
    if isinstance(driver, int) and psutil.pid_exists(driver):
        try:   # the driver still lives (a concurrent sweep): leave its helpers alone
            if psutil.Process(driver).status() != psutil.STATUS_ZOMBIE:
                return 0
        except psutil.Error:
            pass
    procs = [p for p in (_same_process(e) for e in data.get("helpers", [])) if p is not None]
    n = _stop_all(procs, data.get("tag"))
    f.unlink(missing_ok=True)
    return n


class Watchdog:
    """The watchdog process of one embedded Ray (see the module doc)."""

    def __init__(self, procs: Iterable[psutil.Process], *, tag: str | None = None) -> None:
        entries = [e for e in (_identity(p) for p in procs) if e is not None]
        # Run as a script (-P: its folder not on sys.path): ``-m esper_ab.study._reaper``
        # would import the package first, measured at 18 s on a loaded machine.
        self._proc = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).resolve())], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
            start_new_session=True)
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"helpers": entries, "tag": tag}).encode() + b"\n")
        self._proc.stdin.flush()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def close(self, *, wait_s: float = 0.0) -> None:
        """Close the pipe: the watchdog stops whatever helper is left, on its own (the
        driver does not wait for it unless ``wait_s`` > 0: a stop must be quick)."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        if wait_s > 0:
            try:
                self._proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=wait_s)


def _main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    line = sys.stdin.buffer.readline()
    try:
        data = json.loads(line or b"{}")
    except ValueError:
        return 1
    while sys.stdin.buffer.read(65536):   # blocks until the driver closes the pipe or dies
        pass
    time.sleep(0.2)                        # let a clean ray.shutdown() finish first
    procs = [p for p in (_same_process(e) for e in data.get("helpers", [])) if p is not None]
    _stop_all(procs, data.get("tag"))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
