"""One sweep's lifecycle, shared by every entry point (``tune_runner.run_sweep``,
``fidelity.replay_sweep.run_replay_sweep``, ``fidelity.multi.run_multi_fidelity``).

``sweep_lifecycle(spec, ...)`` is the one context manager that owns:

- the **checks before anything starts**: the MLflow URI (``preflight``: a server must answer
  ``/health`` in seconds; a sqlite store's folder must exist) and the sweep folder
  (``--storage-dir`` must be a usable folder);
- the **sweep folder** ``<storage>/<name>/`` and an exclusive lock on it (``driver.lock``,
  ``filelock``): two drivers never share a folder's journal and state;
- the **helpers of a dead driver**: the embedded-Ray processes a killed driver of this
  folder left behind are stopped by their recorded PIDs (``_reaper``) before anything else;
- **signals**: SIGINT and SIGTERM are handled alike by one handler. During ``Tuner.fit``
  (:meth:`SweepLifecycle.fitting`) the first one reaches Ray Tune's own stop handler, so
  Tune ends its loop at a safe point; if Tune has not returned ``FIT_GRACE_S`` later (it
  saves its state and waits for trial actors), the stop is forced with a
  ``KeyboardInterrupt`` -- harmless, because a resume never reads Tune's state, and the
  journal and MLflow stay consistent wherever it lands (see ``esper_ab.study.resume``).
  Elsewhere, and on a second signal, it raises ``KeyboardInterrupt`` at once.
  :attr:`SweepLifecycle.interrupted` says whether one came, so an incomplete sweep without
  a signal is a failure, never "interrupted";
- the **parent run**: started (or reopened on ``--resume``) through the lifecycle, and always
  ended: FINISHED by :meth:`SweepLifecycle.finish`, else FAILED with the reason --
  ``interrupted: resume with ...`` after SIGINT/SIGTERM, ``<what> failed: <error>`` after
  any other exception -- with every child still RUNNING closed first (``close_orphans``);
- the **state file** (``state.json``) of a resumable sweep: ``running``, ``finished``,
  ``interrupted`` or ``failed``, and the parent run id; a new sweep started over a
  ``running`` state (its driver was killed) closes that sweep's runs as abandoned;
- an **embedded Ray** it was handed (:meth:`SweepLifecycle.connected`): its helpers'
  PIDs are recorded in the folder while it runs, and it is shut down on the way out;
- a **tracking server that dies**: with an ``http(s)://`` URI, a watch thread asks the
  server's ``/health`` every few seconds; when it has not answered for
  ``$ESPER_AB_TRACKING_TIMEOUT_S`` (default 60 s) the sweep is stopped as by a SIGINT and
  ends with one ``TrackingServerDown`` line; MLflow's own HTTP retries are bounded to about
  that time per call, and a SIGINT stops the sweep while they run (runs are then ended only
  if the server still answers; ``state.json`` says "failed" either way);
- a **full disk**: ENOSPC anywhere (an ``OSError``, sqlite's "database or disk is full",
  wrapped in whatever error carried it) ends the sweep with one ``DiskFull`` line naming the
  path. A small reserve file kept in the sweep folder is deleted first, so that on the same
  filesystem the runs can still be ended FAILED and ``state.json`` still says "failed";
  ``--resume`` works once there is space again.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from esper_ab.errors import ConfigError, DiskFull, EsperABError, disk_full
from esper_ab.study._reaper import forget_helpers, helper_processes, reap_recorded, record_helpers
from esper_ab.study._tracking_watch import (
    ServerWatch,
    bound_http_retries,
    server_answers,
    tracking_timeout_s,
)
from esper_ab.study.preflight import check_tracking_uri, usable_dir
from esper_ab.study.studies import SweepFolderLock, sweep_dir_for
from esper_ab.tracking import SweepTracker

__all__ = ["SweepLifecycle", "TrackingServerDown", "failure_reason", "read_state", "sweep_lifecycle", "write_state"]

STATE_FILE = "state.json"
FIT_GRACE_S = 1.0          # after a signal, how long Tune may take to stop by itself
RESERVE_FILE = ".disk-reserve"
RESERVE_BYTES = 256 * 1024  # freed on ENOSPC: room to end the runs and write the state


class TrackingServerDown(EsperABError):
    """The MLflow server stopped answering while the sweep ran."""


class _DiskFullLogs(logging.Filter):
    """Drops the log records (Tune's "Trial task failed" tracebacks, its snapshot warnings)
    of a full disk and remembers it: the sweep then ends with one ``DiskFull`` line."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        where = disk_full(exc)
        if where is None and any(t in record.getMessage().lower()
                                 for t in ("no space left on device", "disk is full")):
            where = ""
        if where is None:
            return True
        self.seen = self.seen or where
        return False

    @contextmanager
    def installed(self) -> Iterator[_DiskFullLogs]:
        """On every handler of the root, ``ray`` and ``mlflow`` loggers while inside."""
        names = [n for n in logging.root.manager.loggerDict
                 if n.split(".")[0] in ("ray", "mlflow")]
        handlers = {h for n in names for h in getattr(logging.getLogger(n), "handlers", [])}
        handlers |= set(logging.root.handlers)
        # and the loggers of Tune's trial errors themselves (a handler added later, too)
        loggers = [logging.getLogger(n) for n in ("ray.tune.execution.tune_controller",
                                                  "ray.tune.execution.experiment_state")]
        for x in (*handlers, *loggers):
            x.addFilter(self)
        try:
            yield self
        finally:
            for x in (*handlers, *loggers):
                x.removeFilter(self)


def _disk_full_stop(life: SweepLifecycle, folder: Path, what: str, where: str,
                    resume_hint: str | None) -> DiskFull:
    """End a sweep stopped by a full disk: free the reserve (room to end the runs and write
    the state), end every run FAILED with the one line, and return that ``DiskFull``."""
    _free_reserve(folder)
    again = f"resume with {resume_hint}" if resume_hint else "run it again"
    full = DiskFull(f"{what} stopped: no space left on the device of "
                    f"{where or folder}: free some space there, then {again}")
    life._fail(str(full), "failed")
    return full


def _full_device(folder: Path, uri: str) -> str | None:
    """The sweep folder or the sqlite store when its device has (almost) no space left: a
    write there failed for that reason (MLflow's background writer says nothing of it)."""
    store = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None
    for path in (folder, store):
        try:
            if path is not None and shutil.disk_usage(path).free < RESERVE_BYTES // 4:
                return str(path)
        except OSError:
            continue
    return None


def _reserve(folder: Path) -> None:
    try:
        with (folder / RESERVE_FILE).open("wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)
    except OSError:
        (folder / RESERVE_FILE).unlink(missing_ok=True)


def _free_reserve(folder: Path) -> None:
    try:
        (folder / RESERVE_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def read_state(folder: Path) -> dict[str, Any]:
    f = Path(folder) / STATE_FILE
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except ValueError:
        return {}


def write_state(folder: Path, **state: Any) -> None:
    """Merge ``state`` into the folder's state file, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({**read_state(folder), **state}, indent=1))
    tmp.replace(folder / STATE_FILE)


def failure_reason(what: str, exc: BaseException) -> str:
    return f"{what} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


class _Signals:
    """SIGINT and SIGTERM, handled alike (main thread only; see the module doc)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.fitting = False
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    def install(self) -> None:
        """(Re)install the handler; the handlers from before the first call come back at
        :meth:`restore`."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(sig, self._handle)
                self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signum
        tune_handler = signal.getsignal(signal.SIGUSR1) if self.fitting else None
        if first and callable(tune_handler):
            tune_handler(signum, frame)   # Tune ends its loop at a safe point
            # Tune then saves its state and waits up to 5 s for trial actors to stop
            # (measured: 10 s in all with a batch running). esper-ab resumes from the journal
            # and MLflow, not from that state, so after FIT_GRACE_S the stop is forced --
            # by then the loop has ended, nothing writes the journal or MLflow any more.
            self._timer = threading.Timer(FIT_GRACE_S, _thread.interrupt_main)
            self._timer.daemon = True
            self._timer.start()
            return
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SweepLifecycle:
    """What one entry point holds while its sweep runs (see the module doc)."""

    def __init__(self, tracker: SweepTracker, folder: Path, *, what: str,
                 resumable: bool) -> None:
        self.tracker, self.folder, self.what, self.resumable = tracker, folder, what, resumable
        self.parent = ""
        self.finished = False
        self._on_exit: list[Callable[[], None]] = []
        self._signals = _Signals()
        self.tracking_down: str | None = None     # why the MLflow server was given up on
        self.full_disk: str | None = None         # the device a tracking write found full

    def _server_down(self, reason: str) -> None:
        """From the server watch's thread: stop the sweep as a SIGINT would."""
        self.tracking_down = reason
        _thread.interrupt_main(signal.SIGINT)

    def disk_full(self, where: str) -> None:
        """From the tracking writer's thread: a run's end could not be written for lack of
        space, so Optuna is never told of it and the sweep would wait on it for ever; stop
        the sweep as a SIGINT would, and end it with one ``DiskFull`` line."""
        if self.full_disk is None:
            self.full_disk = where
            _thread.interrupt_main(signal.SIGINT)

    def _tracking_answers(self) -> bool:
        http = self.tracker.uri.startswith(("http://", "https://"))
        return self.tracking_down is None and (not http or server_answers(self.tracker.uri))

    @property
    def interrupted(self) -> bool:
        """A SIGINT or SIGTERM arrived (the sweep must stop and say so)."""
        return self._signals.received is not None

    @contextmanager
    def fitting(self) -> Iterator[None]:
        """Around ``Tuner.fit``: a signal reaches Tune's own stop handler (SIGUSR1's, which
        Tune installs; its SIGINT handler is switched off), so Tune stops at a safe point
        and returns; a second signal raises ``KeyboardInterrupt`` at once."""
        before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._signals.fitting = True
        try:
            yield
        finally:
            self._signals.fitting = False
            if self._signals.received is None:
                self._signals.cancel_timer()
            # else the timer still forces the stop: after Tune returns, the driver may wait
            # on MLflow (a server that died), and the first Ctrl-C must end that wait too
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)   # Tune leaves its handler
            if before is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before

    # -- the parent run ---------------------------------------------------------------
    def start(self, spec: Any, *, space: Mapping[str, Any], run_name: str,
              tags: Mapping[str, str] = {}, state: Mapping[str, Any] = {}) -> str:
        """Start the parent run (a resumable sweep also records it in its state file)."""
        self.parent = self.tracker.start_sweep(spec, space=space, run_name=run_name,
                                               tags=dict(tags))
        if self.resumable:
            write_state(self.folder, sweep_run_id=self.parent, status="running", **state)
        return self.parent

    def reopen(self, parent: str) -> str:
        """Continue the parent run of an interrupted sweep (``--resume``)."""
        self.parent = parent
        self.tracker.reopen(parent)
        write_state(self.folder, status="running", reason=None)
        return parent

    def finish(self, reason: str) -> None:
        """End the parent run FINISHED with ``reason`` (the sweep's verdict)."""
        self.tracker.end_run(self.parent, "FINISHED", reason)
        if self.resumable:
            write_state(self.folder, status="finished", reason=None)
        self.finished = True

    def _fail(self, reason: str, status: str) -> None:
        if self.resumable and self.parent:      # first: the state must say so, whatever fails
            _best_effort(lambda: write_state(self.folder, status=status, reason=reason[:500]))
        if self.parent and self._tracking_answers():   # a dead server is not waited on
            # each step alone: a dead server or a full disk must not skip one
            _best_effort(lambda: self.tracker.close_orphans(self.parent, reason))
            _best_effort(lambda: self.tracker.end_run(self.parent, "FAILED", reason))

    # -- Ray ------------------------------------------------------------------------------
    def connected(self, started: bool, shutdown: Callable[[], None]) -> None:
        """After ``connect_ray``: ``ray.init`` installs Ray's own SIGTERM handler (it prints
        a stack and aborts), so ours goes back on top. ``started``: this entry point started
        an embedded Ray -- record its helpers, and shut it down (``shutdown``) on the way
        out."""
        self._signals.install()
        if started:
            record_helpers(self.folder, helper_processes())
            self.at_exit(lambda: forget_helpers(self.folder))
            self.at_exit(shutdown)

    def at_exit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the way out, however the sweep ends (last registered, first run)."""
        self._on_exit.append(fn)

    def _exit(self) -> None:
        for fn in reversed(self._on_exit):
            try:
                fn()
            except Exception:  # noqa: BLE001 - shutting down must not hide the sweep's error
                pass
        self._on_exit.clear()

    # -- an abandoned sweep -----------------------------------------------------------
    def close_abandoned(self) -> None:
        """A state left ``running`` belongs to a driver that died: close its runs."""
        state = read_state(self.folder)
        if state.get("status") == "running" and state.get("sweep_run_id"):
            rid = state["sweep_run_id"]
            self.tracker.close_orphans(rid, "abandoned: the driver died and a new sweep "
                                            "started without --resume")
            self.tracker.end_run(rid, "FAILED", "abandoned: the driver died and a new sweep "
                                                "started without --resume")
            write_state(self.folder, status="failed")


def _best_effort(fn: Callable[[], object]) -> None:
    """Run ``fn``; on a full disk, what cannot be written is not written (the one error line
    says why), so any error here is dropped."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - the sweep's own error is the one reported
        pass


@contextmanager
def sweep_lifecycle(spec: Any, *, tracking_uri: str | None, storage_dir: str | None,
                    what: str = "sweep", resumable: bool = False,
                    resume_hint: str | None = None) -> Iterator[SweepLifecycle]:
    """Hold a sweep's folder, parent run, signals and Ray for the body (module doc).
    ``resume_hint`` is how the user resumes (said in the reason of an interrupted run)."""
    check_tracking_uri(tracking_uri)
    tracker = SweepTracker(tracking_uri)
    timeout_s = tracking_timeout_s()
    if tracker.uri.startswith(("http://", "https://")):
        bound_http_retries(timeout_s)
    where = sweep_dir_for(spec, tracker.uri, storage_dir)
    option = "--storage-dir" if storage_dir else "the sweep folder"
    folder = usable_dir(where, option).resolve()
    life = SweepLifecycle(tracker, folder, what=what, resumable=resumable)
    with SweepFolderLock(folder, "driver", what=f"a sweep of {spec.name!r} in {folder}"):
        reap_recorded(folder)
        _reserve(folder)
        logs = _DiskFullLogs()
        log_filter = logs.installed()
        log_filter.__enter__()
        life._signals.install()
        watch = None
        if tracker.uri.startswith(("http://", "https://")):
            watch = ServerWatch(tracker.uri, timeout_s, life._server_down).start()
        try:
            yield life
            if not life.finished:
                raise ConfigError(f"{what} ended without a result (internal error): "
                                  "report it with the sweep's log")
        except KeyboardInterrupt as exc:
            life._signals.cancel_timer()
            if life.full_disk is not None:     # the writer found the disk full
                full = _disk_full_stop(life, folder, what, life.full_disk, resume_hint)
                raise full from exc
            hint = f": resume with {resume_hint}" if resume_hint else \
                ": run the same command again (cached work is reused)"
            if life.tracking_down is not None:
                again = hint.removeprefix(": ") if resume_hint else "run it again"
                down = TrackingServerDown(f"{what} stopped: {life.tracking_down}: restart "
                                          f"it, then {again}")
                life._fail(str(down), "failed")
                raise down from None
            life._fail(f"interrupted{hint} ({folder})", "interrupted")
            raise
        except BaseException as exc:
            where = disk_full(exc)
            if where is None:
                where = logs.seen if logs.seen is not None else _full_device(folder, tracker.uri)
            if where is None:
                life._fail(failure_reason(what, exc), "failed")
                raise
            raise _disk_full_stop(life, folder, what, where, resume_hint) from None
        finally:
            _free_reserve(folder)
            life._exit()
            life._signals.restore()
            log_filter.__exit__(None, None, None)
            if watch is not None:
                watch.stop()
