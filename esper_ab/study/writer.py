"""The MLflow writer thread of a sweep's driver, MLflow-free: ``BackgroundWriter`` runs a
tracker's calls (``esper_ab.tracking.SweepTracker``) in order on one background thread, so
Tune never waits on the store and a run's end is written after everything logged to it
(MLflow's own ``synchronous=False`` queue cost ~1 s per run end). ``esper_ab.tracking``
re-exports it.

A Ctrl-C must end the driver even while that thread waits on a tracking server that died
(MLflow's client retries each call for up to ``$ESPER_AB_TRACKING_TIMEOUT_S``):

- :meth:`BackgroundWriter.drain` waits in short slices, so the interrupt that
  ``esper_ab.study.lifecycle`` raises in the main thread (``_thread.interrupt_main``, which,
  unlike a real signal, wakes no blocking wait) ends it within ``DRAIN_POLL_S``. A plain
  ``Future.result()`` could not be interrupted: a driver stopped during Tune's end-of-fit
  drain hung until the queued calls had exhausted their retries (minutes);
- the thread is a daemon, so the process never waits for it at exit (a
  ``ThreadPoolExecutor``'s thread is joined, queued calls included). Whatever it had not
  written is what ``--resume`` reconciles from the Optuna journal and MLflow.
"""

from __future__ import annotations

import queue
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from esper_ab.errors import disk_full

__all__ = ["DRAIN_POLL_S", "BackgroundWriter"]

DRAIN_POLL_S = 0.2      # how often a drain lets a pending interrupt through


class BackgroundWriter:
    """Runs tracker calls in order on one background thread (see the module doc).

    ``submit`` returns a ``Future``; arguments that are futures are resolved first (they
    come earlier in the queue, so they are done). Failed calls are reported on stderr and
    counted; a run whose end failed to be written is closed by ``close_orphans`` later.
    """

    def __init__(self, tracker: Any, on_disk_full: Any | None = None) -> None:
        self.tracker = tracker
        self._queue: queue.SimpleQueue | None = None
        self.failures = 0
        # called with the full device's path when a write fails for lack of space: a run
        # whose end cannot be written is never told to Optuna, so the sweep must stop
        # rather than wait on it (esper_ab.study.lifecycle.SweepLifecycle.disk_full)
        self.on_disk_full = on_disk_full

    def __getstate__(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "_queue": None, "failures": 0, "on_disk_full": None}

    def _put(self, fn: Callable[[], Any]) -> Future:
        """Queue ``fn`` for the writer thread (started on first use); its future."""
        if self._queue is None:
            self._queue = queue.SimpleQueue()
            threading.Thread(target=_work, args=(self._queue,), daemon=True,
                             name="esper-ab-mlflow").start()
            weakref.finalize(self, self._queue.put, None)   # a dropped writer's thread ends
        fut: Future = Future()
        self._queue.put((fut, fn))
        return fut

    def submit(self, method: str, *args: Any, **kwargs: Any) -> Future:
        return self._put(lambda: self._call(method, args, kwargs))

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        args = tuple(a.result() if isinstance(a, Future) else a for a in args)
        try:
            return getattr(self.tracker, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - logging must never kill the sweep
            self.failures += 1   # no warning for a run never created (said) or a full disk:
            where = disk_full(exc)                     # the sweep ends in one line
            if where is not None and self.on_disk_full is not None:
                self.on_disk_full(where)
            elif args[:1] != (None,) and where is None:
                print(f"esper-ab: warning: MLflow {method} failed: {type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:300]}", file=sys.stderr)
            return None

    def drain(self) -> None:
        """Wait until every queued call is written; an interrupt of the main thread ends
        the wait within ``DRAIN_POLL_S`` (module doc)."""
        if self._queue is None:
            return
        done = self._put(lambda: None)
        while True:
            try:
                done.result(timeout=DRAIN_POLL_S)
                return
            except FutureTimeout:
                continue

    def submit_then(self, then: Any, method: str, *args: Any, **kwargs: Any) -> Future:
        """``submit(method, ...)``; once that call is written without an error, ``then()``
        runs on the writer thread (e.g. telling Optuna a trial ended only after MLflow has
        its end)."""
        def run() -> Any:
            before = self.failures
            out = self._call(method, args, kwargs)
            if self.failures == before:
                try:
                    then()
                except Exception as exc:  # noqa: BLE001 - reported, never kills the sweep
                    self.failures += 1
                    print(f"esper-ab: warning: after MLflow {method}: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}", file=sys.stderr)
            return out

        return self._put(run)


def _work(calls: queue.SimpleQueue) -> None:
    """The writer thread: run queued calls in order until its writer is dropped."""
    while (item := calls.get()) is not None:
        _run_one(*item)
        del item            # it holds its writer: drop it before waiting for the next


def _run_one(fut: Future, fn: Callable[[], Any]) -> None:
    if fut.set_running_or_notify_cancel():
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - the caller of result() sees it
            fut.set_exception(exc)
