"""An MLflow server that dies mid-sweep is a failure in bounded time (private to ``study``).

MLflow's client retries a failed HTTP call for about 250 s (plus a 120 s request timeout), and
a sweep's background writer keeps queueing calls, so a server that died left a sweep hanging
for minutes without a word. ``sweep_lifecycle`` bounds MLflow's retries
(:func:`bound_http_retries`) and runs a :class:`ServerWatch`: a daemon thread that asks the
server's ``/health`` every few seconds and, when it has not answered for
``$ESPER_AB_TRACKING_TIMEOUT_S`` (default 60 s), stops the sweep with one line. No MLflow
import: plain ``urllib``.
"""

from __future__ import annotations

import math
import os
import threading
import time
import urllib.request
from collections.abc import Callable

from esper_ab.errors import ConfigError

__all__ = ["DEFAULT_TRACKING_TIMEOUT_S", "TRACKING_TIMEOUT_VAR", "ServerWatch",
           "bound_http_retries", "server_answers", "tracking_timeout_s"]

TRACKING_TIMEOUT_VAR = "ESPER_AB_TRACKING_TIMEOUT_S"
DEFAULT_TRACKING_TIMEOUT_S = 60.0


def tracking_timeout_s() -> float:
    """How long an MLflow server may stop answering before a sweep gives up on it:
    ``$ESPER_AB_TRACKING_TIMEOUT_S``, else 60 s."""
    raw = os.environ.get(TRACKING_TIMEOUT_VAR, "")
    try:
        value = float(raw) if raw else DEFAULT_TRACKING_TIMEOUT_S
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise ConfigError(f"{TRACKING_TIMEOUT_VAR}={raw!r} is invalid: give a positive number "
                          "of seconds (how long an MLflow server may stop answering)")
    return value


def bound_http_retries(timeout_s: float) -> None:
    """Bound MLflow's own HTTP retries (by default about 250 s of backoff per call, plus a
    120 s request timeout) to about ``timeout_s`` per call, unless the user set them."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout_s / 4))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    retries = max(1, int(math.log2(max(2.0, timeout_s / 2))))   # 1+2+4+... <= timeout_s
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))


def server_answers(uri: str, timeout_s: float = 2.0) -> bool:
    """True when the MLflow server at ``uri`` answers ``GET /health``."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


class ServerWatch:
    """A daemon thread that asks an MLflow server's ``/health`` every few seconds and calls
    ``on_down(reason)`` once when it has not answered for ``timeout_s``."""

    def __init__(self, uri: str, timeout_s: float, on_down: Callable[[str], None]) -> None:
        self.uri, self.timeout_s, self.on_down = uri, timeout_s, on_down
        self.down: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="esper-ab-mlflow-health")

    def start(self) -> ServerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        period = min(5.0, max(0.5, self.timeout_s / 6))
        last_ok = time.monotonic()
        while not self._stop.wait(period):
            if server_answers(self.uri, timeout_s=min(5.0, period)):
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= self.timeout_s:
                self.down = (f"the MLflow server {self.uri} has not answered /health for "
                             f"{self.timeout_s:.0f} s")
                self.on_down(self.down)
                return


