"""A torn last record of an Optuna journal, found and moved aside (private to ``study``).

Optuna's ``JournalFileBackend`` appends each batch of records with one ``write`` in append
mode and ``fsync``s it, so a crash (SIGKILL, a full disk, a power cut) can tear only the end
of the file: a last line without its newline, half a JSON object, or zeros. Optuna skips such
a line when it reads, but its next append lands right after it, so the torn bytes and the
next record become one line that no later read can parse: every resume of the sweep would
fail with a ``JSONDecodeError``.

:func:`recover_torn_tail` runs when a sweep opens its journal (under the sweep folder's
lock, so no other writer is appending): the bytes after the last complete record are moved
to ``<journal>.torn-<time>`` with one note line, and the study resumes from that record. A
damaged record *followed by* complete ones is not a torn write (the file was edited or
corrupted in the middle): that is refused in one line, since dropping a record in the middle
would shift the trial numbers of every later one.

A writer killed while it held Optuna's own journal lock (``<journal>.lock``, a symlink)
leaves it behind, and Optuna waits 30 s before it breaks such a lock. The caller holds the
sweep folder's exclusive lock, so no other writer can hold it: it is removed at once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from esper_ab.errors import DataError, print_note, shown_path

__all__ = ["recover_torn_tail"]


def _complete(line: bytes) -> bool:
    """One whole journal record: a newline-terminated JSON object with an ``op_code``."""
    if not line.endswith(b"\n"):
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "op_code" in record


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover_torn_tail(path: str | Path) -> Path | None:
    """Move a torn end of the journal at ``path`` aside, and remove a lock a killed writer
    left (the caller holds the sweep folder's lock); the file the torn end went to (None: the
    journal was whole, or there is none). ``DataError`` when a damaged record is followed by
    complete ones."""
    p = Path(path)
    stale = p.with_name(f"{p.name}.lock")
    if stale.is_symlink() or stale.exists():
        stale.unlink(missing_ok=True)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    lines = data.splitlines(keepends=True)
    good_bytes, n_good = 0, 0
    for line in lines:
        if not _complete(line):
            break
        good_bytes += len(line)
        n_good += 1
    if good_bytes == len(data):
        return None
    later = sum(1 for line in lines[n_good + 1:] if _complete(line))
    if later:
        raise DataError(f"the Optuna journal {shown_path(p)} has a damaged record (line "
                        f"{n_good + 1}) followed by {later} complete one(s): it was changed or "
                        "corrupted in the middle, not torn by a crash; restore it from a "
                        "backup, or delete it (and run the sweep without --resume) to start "
                        "the study afresh")
    aside = p.with_name(f"{p.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    with aside.open("wb") as fh:
        fh.write(data[good_bytes:])
        fh.flush()
        os.fsync(fh.fileno())
    with p.open("r+b") as fh:
        fh.truncate(good_bytes)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(p.parent)
    print_note(f"the Optuna journal {p} ended in a torn record ({len(data) - good_bytes} "
               f"byte(s) after its last complete one, e.g. a crash or a full disk mid-write): "
               f"moved to {aside.name}; the study resumes from its last complete record "
               f"({n_good} record(s))")
    return aside
