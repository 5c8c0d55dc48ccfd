"""Reading esper-lite's telemetry files: Nissa ``DirectoryOutput`` writes one ``events.jsonl``
per run, one ``TelemetryEvent`` per line.

Every problem is one :class:`DataError` line that names the file and the line number.
Hostile input is bounded: only regular files are read (a FIFO or a device is refused before
it is opened), a line may hold at most :data:`MAX_LINE` bytes (read in bounded pieces, so
memory stays bounded whatever the file holds), JSON nesting at most :data:`MAX_DEPTH` deep,
and a name (slot, seed, blueprint, check) at most :data:`MAX_NAME` characters.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esper_ab.errors import DataError, shown

EVENTS_FILE = "events.jsonl"
MAX_LINE = 1 << 20      # bytes; esper-lite's events are a few KB
MAX_DEPTH = 64          # JSON nesting; esper-lite's events nest 4 deep
MAX_NAME = 256          # characters of a name


def _regular(p: Path, label: str) -> None:
    """Refuse anything but a regular file (following links) without opening it."""
    try:
        mode = os.stat(p).st_mode
    except OSError as exc:
        raise DataError(f"cannot read {label} {str(p)!r} ({exc.strerror}): check the path "
                        "and its permissions") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode)
                or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise DataError(f"{label} {str(p)!r} is {kind}, not a regular file: pass the "
                        f"{EVENTS_FILE} files esper-lite wrote")


def find_event_files(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """``(run, file)`` for one ``events.jsonl`` or every one under a folder (recursive).

    A run is named by its folder relative to ``path`` (``heuristic-strict/ep00``); a file
    passed directly, or one lying in ``path`` itself, is named by the folder that holds it.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        _regular(p, "PATH")
        return [(p.resolve().parent.name or p.stem, p)]
    if not p.is_dir():
        raise DataError(f"PATH {str(path)!r} does not exist: pass an esper-lite events.jsonl "
                        "or a folder that holds some (searched recursively)")
    files = sorted(p.rglob(EVENTS_FILE))
    if not files:
        raise DataError(f"folder {str(path)!r} holds no {EVENTS_FILE}: pass the telemetry "
                        "folder esper-lite's DirectoryOutput wrote, or one such file")
    out = []
    for f in files:
        _regular(f, "file")
        run = f.parent.relative_to(p).as_posix()
        out.append((p.resolve().name if run == "." else run, f))
    return out


def _where(file: Path, line: int) -> str:
    return f"{file}:{line}"


def read_events(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, event)`` for each non-blank line; bad lines raise :class:`DataError`."""
    try:
        fh = open(file, "rb")  # noqa: SIM115 - closed below; bytes so decoding errors have a line
    except OSError as exc:
        raise DataError(f"cannot read {str(file)!r} ({exc.strerror}): check the path and its "
                        "permissions") from None
    with fh:
        n = 0
        while True:
            raw = fh.readline(MAX_LINE + 1)
            if not raw:
                break
            n += 1
            if len(raw) > MAX_LINE:
                raise DataError(f"{_where(file, n)}: the line is longer than {MAX_LINE:,} "
                                "bytes (esper-lite's events are a few KB): the file is damaged "
                                "or not esper-lite telemetry; remove the line")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{_where(file, n)}: the line is not UTF-8 text: the file is "
                                "damaged; re-export it from esper-lite or remove the line") from None
            if not text.strip():
                continue
            try:
                event = json.loads(text)
                deep = (text.count("[") + text.count("{") > MAX_DEPTH
                        and _depth(event) > MAX_DEPTH)
            except RecursionError:
                deep = True
            except json.JSONDecodeError as exc:
                cut = "; the line is truncated" if not text.endswith("\n") else ""
                raise DataError(f"{_where(file, n)}: not a JSON object ({exc.msg} at column "
                                f"{exc.colno}{cut}): repair or remove the line") from None
            if deep:
                raise DataError(f"{_where(file, n)}: JSON nested deeper than {MAX_DEPTH} "
                                "levels (esper-lite's events nest 4 deep): the file is damaged "
                                "or not esper-lite telemetry; remove the line")
            if not isinstance(event, dict):
                raise DataError(f"{_where(file, n)}: holds {type(event).__name__}, not a "
                                "TelemetryEvent object: repair or remove the line")
            kind = event.get("event_type")
            if not isinstance(kind, str) or not kind:
                raise DataError(f"{_where(file, n)}: event_type={shown(kind)} is missing or "
                                "not a name: every line needs esper-lite's event envelope")
            yield n, event


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (stops once over MAX_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


class EventView:
    """Typed access to one event's fields, with errors that name the file and line."""

    def __init__(self, file: Path, line: int, event: dict[str, Any]):
        self.file, self.line, self.event = file, line, event
        self.type: str = event["event_type"]
        data = event.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error(f"data={shown(data)} is not an object", "esper-lite writes the "
                             "event payload as a JSON object")
        self.data: dict[str, Any] = data

    def error(self, problem: str, fix: str) -> DataError:
        return DataError(f"{_where(self.file, self.line)}: {self.type} {problem}: {fix}")

    def name(self, key: str, *, envelope: bool = False, fallback: str | None = None) -> str:
        """A non-empty string from the envelope (or, failing that, ``data``)."""
        value = self.event.get(key) if envelope else self.data.get(key)
        if (value is None or value == "") and fallback is not None:
            value = self.data.get(fallback) if envelope else self.event.get(fallback)
        if not isinstance(value, str) or not value:
            raise self.error(f"has {key}={shown(value)}", f"a {self.type} event names its {key}")
        if len(value) > MAX_NAME:
            raise self.error(f"has a {key} of {len(value):,} characters ({shown(value)})",
                             f"names are at most {MAX_NAME} characters; repair the line")
        return value

    def integer(self, key: str, *, optional: bool = False) -> int | None:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value) or value != int(value):
            raise self.error(f"has {key}={shown(value)}", f"{key} must be a whole number")
        return int(value)

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if not isinstance(value, bool):
            raise self.error(f"has {key}={shown(value)}", f"{key} must be true or false")
        return value

    def names(self, key: str) -> list[str]:
        value = self.data.get(key, [])
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"has {key}={shown(value)}", f"{key} must be a list of strings")
        long = next((v for v in value if len(v) > MAX_NAME), None)
        if long is not None:
            raise self.error(f"has a {key} entry of {len(long):,} characters ({shown(long)})",
                             f"check names are at most {MAX_NAME} characters; repair the line")
        return value
