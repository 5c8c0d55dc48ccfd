"""Reading esper-lite's telemetry files: Nissa ``DirectoryOutput`` writes one ``events.jsonl``
per run, one ``TelemetryEvent`` per line.

Every problem is one :class:`DataError` line that names the file and the line number.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esper_ab.errors import DataError, shown

EVENTS_FILE = "events.jsonl"


def find_event_files(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """``(run, file)`` for one ``events.jsonl`` or every one under a folder (recursive).

    A run is named by its folder relative to ``path`` (``heuristic-strict/ep00``); a file
    passed directly, or one lying in ``path`` itself, is named by the folder that holds it.
    """
    p = Path(path)
    if p.is_file():
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
        for n, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{_where(file, n)}: the line is not UTF-8 text: the file is "
                                "damaged; re-export it from esper-lite or remove the line") from None
            if not text.strip():
                continue
            try:
                event = json.loads(text)
            except json.JSONDecodeError as exc:
                cut = "; the line is truncated" if not text.endswith("\n") else ""
                raise DataError(f"{_where(file, n)}: not a JSON object ({exc.msg} at column "
                                f"{exc.colno}{cut}): repair or remove the line") from None
            if not isinstance(event, dict):
                raise DataError(f"{_where(file, n)}: holds {type(event).__name__}, not a "
                                "TelemetryEvent object: repair or remove the line")
            kind = event.get("event_type")
            if not isinstance(kind, str) or not kind:
                raise DataError(f"{_where(file, n)}: event_type={shown(kind)} is missing or "
                                "not a name: every line needs esper-lite's event envelope")
            yield n, event


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
        return value
