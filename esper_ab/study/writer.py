"""The MLflow writer thread of a sweep's driver, MLflow-free: ``BackgroundWriter`` runs a
tracker's calls (``esper_ab.tracking.SweepTracker``) in order on one background thread, so
Tune never waits on the store and a run's end is written after everything logged to it
(MLflow's own ``synchronous=False`` queue cost ~1 s per run end). ``esper_ab.tracking``
re-exports it."""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from esper_ab.errors import disk_full

__all__ = ["BackgroundWriter"]


class BackgroundWriter:
    """Runs tracker calls in order on one background thread (see the module doc).

    ``submit`` returns a ``Future``; arguments that are futures are resolved first (they
    come earlier in the queue, so they are done). Failed calls are reported on stderr and
    counted; a run whose end failed to be written is closed by ``close_orphans`` later.
    """

    def __init__(self, tracker: Any, on_disk_full: Any | None = None) -> None:
        self.tracker = tracker
        self._pool: ThreadPoolExecutor | None = None
        self.failures = 0
        # called with the full device's path when a write fails for lack of space: a run
        # whose end cannot be written is never told to Optuna, so the sweep must stop
        # rather than wait on it (esper_ab.study.lifecycle.SweepLifecycle.disk_full)
        self.on_disk_full = on_disk_full

    def __getstate__(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "_pool": None, "failures": 0, "on_disk_full": None}

    def submit(self, method: str, *args: Any, **kwargs: Any) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esper-ab-mlflow")
        return self._pool.submit(self._call, method, args, kwargs)

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
        """Wait until every queued call is written."""
        if self._pool is not None:
            self._pool.submit(lambda: None).result()

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

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esper-ab-mlflow")
        return self._pool.submit(run)
