"""Progress of the long phases (recording, search, confirmation, analysis), and ``--log-file``.

Every long-running function takes ``progress``: a callable ``progress(phase, done, total)``
called once per finished unit (an episode, a closed-loop run, a batch of replayed configs, a
Tune trial, an analysis step). :class:`Progress` is the one reporter the CLI passes:

- on a terminal (stdout and stderr both TTYs) a tqdm bar per phase, on stderr;
- off one (output redirected or piped) a timestamped line per call on stdout, e.g.
  ``2026-01-02 10:11:12 search: 4/8 trials (12.3 s)``, so a log file shows where a run is;
- nothing with ``enabled=False`` (``--no-progress``).

``report_note(progress, text)`` tells the user one thing a run decided (the resources it
uses): :class:`Progress` prints it on stdout whether or not progress is enabled; a plain
callable reporter ignores it.

:func:`tee_output` is ``--log-file PATH``: everything written to the process's stdout and
stderr (file descriptors 1 and 2, so Ray's and C libraries' output too) also goes to PATH.
In the file, a line rewritten in place with ``\\r`` (a progress bar) keeps its last state.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from esper_ab.errors import ConfigError

__all__ = ["PHASE_UNITS", "Progress", "ProgressFn", "console_is_tty", "report_note",
           "tee_output"]

ProgressFn = Callable[[str, int, int], None]

PHASE_UNITS: dict[str, str] = {
    "record": "episodes", "closed-loop": "runs", "search": "trials", "replay": "configs",
    "analysis": "steps", "incubate": "epochs", "value": "forks", "traces": "tasks",
}

_TTY: bool | None = None          # the terminal state seen before tee_output replaced fds


def console_is_tty() -> bool:
    """True when stdout and stderr are both terminals (as they were before ``tee_output``)."""
    if _TTY is not None:
        return _TTY
    return _isatty(sys.stdout) and _isatty(sys.stderr)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """``progress(phase, done, total)``: a tqdm bar on a terminal, timestamped lines off one.

    ``mode`` forces ``"bar"`` or ``"lines"`` (default: by :func:`console_is_tty`).
    ``min_interval_s`` throttles lines (a phase's first and last update always print);
    ``out`` is where lines go (default: ``sys.stdout`` at the time of the call).
    """

    def __init__(self, *, enabled: bool = True, mode: str | None = None,
                 min_interval_s: float = 0.0, out: TextIO | None = None) -> None:
        if mode not in (None, "bar", "lines"):
            raise ValueError(f"mode={mode!r}: use 'bar', 'lines' or None")
        self.enabled = enabled
        self.mode = mode or ("bar" if console_is_tty() else "lines")
        self.min_interval_s, self.out = min_interval_s, out
        self._phase: str | None = None
        self._bar: Any = None
        self._start = self._last_line = 0.0
        self._last_done = -1
        self._lock = threading.Lock()     # Tune callbacks and writer threads may report

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if phase != self._phase:
                self._close_bar()
                self._phase, self._start, self._last_done = phase, time.monotonic(), -1
                self._last_line = 0.0
            if self.mode == "bar":
                self._update_bar(phase, done, total)
            else:
                self._line(phase, done, total)

    def note(self, text: str) -> None:
        """Print one message line on stdout (above a running bar)."""
        with self._lock:
            if self._bar is not None:
                from tqdm import tqdm

                tqdm.write(text, file=self.out or sys.stdout)
            else:
                print(text, file=self.out or sys.stdout, flush=True)

    def _update_bar(self, phase: str, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=phase, unit=f" {PHASE_UNITS.get(phase, '')}",
                             file=sys.stderr, leave=True, dynamic_ncols=True)
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def _line(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        first_or_last = self._last_done < 0 or done >= total
        if done == self._last_done or (not first_or_last
                                       and now - self._last_line < self.min_interval_s):
            return
        self._last_done, self._last_line = done, now
        unit = PHASE_UNITS.get(phase, "")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out = self.out or sys.stdout
        out.write(f"{stamp} {phase}: {done}/{total} {unit} ({now - self._start:.1f} s)"
                  .replace("  (", " (") + "\n")
        out.flush()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        with self._lock:
            self._close_bar()
            self._phase = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled with a Tune callback (experiment state): the bar and the lock stay behind.
        return {**self.__dict__, "_bar": None, "_lock": None, "enabled": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def report_note(progress: Any, text: str) -> None:
    """``progress.note(text)`` when the reporter has one (a :class:`Progress`)."""
    note = getattr(progress, "note", None)
    if callable(note):
        note(text)


class _Collapse:
    """Writes text to a file line by line, keeping only what follows a line's last ``\\r``."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.pending = fh, b""

    def write(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self.fh.write(line.rsplit(b"\r", 1)[-1] + b"\n")
        self.fh.flush()

    def flush_pending(self) -> None:
        last = self.pending.rsplit(b"\r", 1)[-1]
        if last:
            self.fh.write(last + b"\n")
        self.pending = b""


@contextmanager
def tee_output(path: str | Path | None) -> Iterator[None]:
    """Copy everything written to fds 1 and 2 into ``path`` (appended) while inside."""
    global _TTY
    if path is None:
        yield
        return
    try:
        fh = open(path, "ab")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise ConfigError(f"--log-file={str(path)!r} cannot be opened ({exc.strerror}): pass "
                          "a path in a writable folder") from None
    sys.stdout.flush()
    sys.stderr.flush()
    saved_tty, _TTY = _TTY, console_is_tty()
    lock = threading.Lock()
    saved, pumps, sinks = {}, [], []
    for fd in (1, 2):
        saved[fd] = os.dup(fd)
        r, w = os.pipe()
        os.dup2(w, fd)
        os.close(w)
        sinks.append(_Collapse(fh))     # one per stream: partial lines never interleave
        t = threading.Thread(target=_pump, args=(r, saved[fd], sinks[-1], lock), daemon=True,
                             name=f"esper-ab-tee-{fd}")
        t.start()
        pumps.append(t)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)      # the pipe's last writer goes: its pump sees EOF
        for t in pumps:
            t.join(timeout=5)           # a child still holding the pipe must not block us
        for fd, t in zip((1, 2), pumps, strict=True):
            if not t.is_alive():
                os.close(saved[fd])
        with lock:
            for sink in sinks:
                sink.flush_pending()
            fh.close()
        _TTY = saved_tty


def _pump(r: int, original: int, sink: _Collapse, lock: threading.Lock) -> None:
    try:
        while True:
            data = os.read(r, 65536)
            if not data:
                break
            os.write(original, data)
            with lock:
                if not sink.fh.closed:
                    sink.write(data)
    except OSError:
        pass
    finally:
        os.close(r)
