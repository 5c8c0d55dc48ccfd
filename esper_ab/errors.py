"""One error hierarchy for the whole project, and what every printed message goes through.

Every message names the bad value and says how to fix it. The CLI turns any
``EsperABError`` into one line on stderr and exit code 2, never a traceback.

Printed text is inert and bounded: :func:`shown` is the bounded, escaped ``repr`` every
message uses for an input value, :func:`one_line` strips terminal control characters and
bounds a whole message, and :class:`InertStream` strips control characters from everything
the CLI prints (a blueprint name can no longer set the terminal's title).
"""

from __future__ import annotations

import re
import reprlib
import sys
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 60, 60, 40
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 6

MAX_MESSAGE = 2000          # characters of one printed error or note line
# C0 controls but tab/newline/carriage return, DEL, C1 controls (ESC and CSI among them),
# and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_BREAKS = re.compile("[\t\n\r]+")


def shown(value: object) -> str:
    """``repr(value)``, bounded and escaped: error messages never print unbounded input, a
    string's control characters show as escapes (``'\\x1b'``), and a numpy scalar prints as
    the plain number it holds (``0``, not ``np.int64(0)``)."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    return _REPR.repr(value)


def shown_path(path: object, limit: int = 400) -> str:
    """A file path for a message: escaped as ``repr`` does, whole unless it is absurdly long
    (then its start and end, which name the folder and the file)."""
    s = str(path)
    if len(s) > limit:
        s = f"{s[:limit // 2]}...{s[-limit // 2:]}"
    return repr(s)


def inert(text: str) -> str:
    """``text`` with terminal control characters removed (newlines, tabs and ``\\r`` kept)."""
    return _CONTROL.sub("", text)


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` as one printable line of at most about ``limit`` characters."""
    s = str(text)
    cut = len(s) - limit
    if cut > 0:
        s = f"{s[:limit]}... ({cut} more characters not shown)"
    return _BREAKS.sub(" ", inert(s))


def error_lines(exc: EsperABError) -> list[str]:
    """What the CLI prints for ``exc``: one bounded line, or, for an explained refusal, its
    own short lines (bounded each, at most :data:`MAX_LINES`)."""
    if not getattr(exc, "explained", False):
        return [one_line(exc)]
    lines = [one_line(line) for line in str(exc).splitlines() if line.strip()] or [""]
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES - 1], f"... ({len(lines) - MAX_LINES + 1} more lines)"]
    return lines


def print_note(text: str) -> None:
    """One ``esper-ab: note:`` line on stderr (a cache recomputed, a journal repaired)."""
    print(f"esper-ab: note: {one_line(text)}", file=sys.stderr, flush=True)


class InertStream:
    """A text stream that strips terminal control characters from what it writes
    (everything else, ``isatty`` and ``fileno`` included, is the wrapped stream's)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(inert(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class EsperABError(Exception):
    """Base class of every error esper-ab raises on purpose.

    Printed as one line. A subclass that explains a refusal rather than a bad input (no
    winner to export) sets ``explained = True``: its message's lines are printed as they are,
    each one still bounded and stripped of control characters, at most ``MAX_LINES``."""

    explained = False


MAX_LINES = 12


class ConfigError(EsperABError, ValueError):
    """A configuration value (strategy parameter, gate setting, YAML field) is invalid."""


class DataError(EsperABError, ValueError):
    """An input table or dataset is missing, malformed or has the wrong types."""


class NotFittedError(EsperABError, RuntimeError):
    """A calibrating strategy was used before ``fit`` was called."""


class DiskFull(EsperABError, OSError):
    """The disk filled up while a sweep ran (ENOSPC somewhere)."""


_FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded")


def disk_full(exc: BaseException | None) -> str | None:
    """When ``exc``, or an error it carries (cause, context, a wrapped error such as Ray's
    ``RayTaskError``), is a full disk: the path it names, or "" when it names none; else
    None."""
    import errno

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return str(e.filename) if e.filename else ""
        if any(t in str(e).lower() for t in _FULL_TEXT):
            return ""
        carried = getattr(e, "__dict__", {}).values()
        todo += [e.__cause__, e.__context__, *(x for x in carried if isinstance(x, BaseException))]
    return None


def bad_value(name: str, value: object, fix: str) -> ConfigError:
    """Build a ConfigError whose message names the value and the fix."""
    return ConfigError(f"{name}={shown(value)} is invalid: {fix}")
