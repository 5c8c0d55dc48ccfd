"""The on-disk caches of ``esper_ab.episodes``, tamper-evident and self-healing (private).

Cache folders have predictable names and a cluster keeps them on shared storage, so every
cached file is untrusted input. Each folder keeps ``index.json``, the sha256 and size of
every file written there, written LAST (a folder whose index is missing was never finished):

- **tensor files** (``host-<hash>.pt``, many per folder): plain state dicts read with
  ``torch.load(weights_only=True)`` -- a pickle that would run code is refused by torch's
  restricted unpickler, never executed. The index is updated under a ``filelock`` with the
  file itself, so concurrent writers stay consistent;
- **result folders** (an episode's tables, a closed-loop run): written whole into a temporary
  folder, sealed with its index, then renamed into place (:func:`install_folder`).

On a read, a file whose bytes match its recorded hash is used. Otherwise:

- the file still reads as its format (an *edited* file, e.g. every seed made "valuable"):
  refused with one ``DataError`` line naming it -- nothing is recomputed over it;
- it is truncated, unreadable or missing, or the index is (a crash, a full disk, an older
  cache): one note line on stderr, and the caller recomputes and overwrites it.

Nothing from a file that failed its check is ever used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from esper_ab.errors import DataError, print_note, shown_path

__all__ = ["INDEX", "install_folder", "load_tensors", "save_tensors", "seal_folder",
           "verified_folder"]

INDEX = "index.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_index(folder: Path) -> dict[str, str]:
    """name -> sha256 (entries written as ``{"sha256": ..., "size": ...}`` or a bare hash)."""
    try:
        data = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v.get("sha256") if isinstance(v, dict) else v)
            for k, v in data.items()}


def _lock(folder: Path) -> FileLock:
    return FileLock(str(folder / f"{INDEX}.lock"), timeout=120)


def _edited(path: Path, expected: str, actual: str) -> DataError:
    return DataError(f"cached file {shown_path(path)} does not match the sha256 its cache "
                     f"index recorded ({expected[:12]}..., found {actual[:12]}...): it was "
                     "changed after it was written; delete it to recompute it")


def _damaged(path: Path, why: str, note: bool = True) -> None:
    if note:
        print_note(f"cached file {shown_path(path)} is {why}: it is not used, and is "
                   "recomputed")


# -- tensor files ------------------------------------------------------------------------

def save_tensors(path: str | Path, blob: dict[str, Any]) -> None:
    """Write ``blob`` (a plain state dict) to ``path`` and record its sha256."""
    import torch

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f"{p.name}.tmp{os.getpid()}")
    buf = io.BytesIO()
    torch.save(blob, buf)          # in memory: torch reports a full disk as a bare RuntimeError
    data = buf.getvalue()
    try:
        try:
            tmp.write_bytes(data)
        except OSError as exc:     # ENOSPC names the folder: the CLI says it in one line
            raise OSError(exc.errno, exc.strerror, str(p.parent)) from exc
        digest = hashlib.sha256(data).hexdigest()
        with _lock(p.parent):
            index = _read_index(p.parent)
            index[p.name] = digest
            idx_tmp = p.parent / f"{INDEX}.tmp{os.getpid()}"
            idx_tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
            tmp.replace(p)
            idx_tmp.replace(p.parent / INDEX)   # the index last
    finally:
        tmp.unlink(missing_ok=True)


def _torch_load(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_tensors(path: str | Path) -> dict[str, Any] | None:
    """The state dict cached at ``path``; None when there is none the index vouches for
    or the file is truncated or unreadable (the caller recomputes it; a note says so).
    ``DataError`` (one line) when the file was changed."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with _lock(p.parent):
            expected = _read_index(p.parent).get(p.name)
            if expected is None:
                return None
            data = p.read_bytes()        # hashed and loaded from the same bytes
    except OSError as exc:
        _damaged(p, f"unreadable ({exc.strerror or type(exc).__name__})")
        return None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        try:
            _torch_load(data)            # weights only: a pickle that runs code is refused
        except pickle.UnpicklingError:
            raise _edited(p, expected, actual) from None
        except Exception:  # noqa: BLE001 - a truncated zip, a short read: damage, not an edit
            _damaged(p, f"truncated or unreadable ({len(data)} bytes, sha256 "
                        f"{actual[:12]}... where the index recorded {expected[:12]}...)")
            return None
        raise _edited(p, expected, actual)
    try:
        blob = _torch_load(data)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad pickle
        first = " ".join(str(exc).split())[:160]
        raise DataError(f"cached file {shown_path(p)} is not a plain tensor state dict "
                        f"({type(exc).__name__}: {first}): delete it to recompute it") from None
    if not isinstance(blob, dict):
        raise DataError(f"cached file {shown_path(p)} holds {type(blob).__name__}, not a "
                        "state dict: delete it to recompute it")
    return blob


# -- result folders ----------------------------------------------------------------------

def seal_folder(folder: Path, names: Iterable[str]) -> None:
    """Record the sha256 and size of ``names`` in ``folder/index.json`` (written last)."""
    folder = Path(folder)
    index = {name: {"sha256": _sha256(folder / name), "size": (folder / name).stat().st_size}
             for name in names}
    tmp = folder / f"{INDEX}.tmp"
    with tmp.open("w") as fh:
        fh.write(json.dumps(index, indent=1, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(folder / INDEX)


Reader = Callable[[Path], object]


def verified_folder(folder: Path, readers: dict[str, Reader], *, note: bool = True) -> bool:
    """True when ``folder`` holds every file of ``readers`` (name -> a function that reads
    that format and raises when it cannot) exactly as its index recorded. False (with one
    note line when there was something there) when the caller must recompute it;
    ``DataError`` when a file was edited (it still reads, but its hash differs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    index = _read_index(folder)
    if not index or set(readers) - set(index):
        if note:
            print_note(f"cache folder {shown_path(folder)} has no complete {INDEX} (an "
                       "interrupted write or an older cache): it is not used, and is "
                       "recomputed")
        return False
    for name, read in readers.items():
        path = folder / name
        try:
            actual = _sha256(path)
        except OSError as exc:
            _damaged(path, f"missing or unreadable ({exc.strerror or type(exc).__name__})",
                     note)
            return False
        if actual == index[name]:
            continue
        try:
            read(path)
        except Exception:  # noqa: BLE001 - any reader failure: damage, not an edit
            _damaged(path, f"truncated or unreadable (sha256 {actual[:12]}... where the "
                           f"index recorded {index[name][:12]}...)", note)
            return False
        raise _edited(path, index[name], actual)
    return True


def install_folder(tmp: Path, folder: Path, readers: dict[str, Reader]) -> None:
    """Seal ``tmp`` (files ``readers``) and rename it to ``folder``. A valid ``folder``
    written meanwhile by another process wins (``tmp`` is dropped); a damaged one is
    replaced."""
    seal_folder(tmp, readers)
    for _ in range(3):
        try:
            tmp.rename(folder)
            return
        except OSError:
            if not folder.exists():
                raise
        try:
            valid = verified_folder(folder, readers, note=False)
        except DataError:
            valid = False                # an edited folder we just recomputed: replace it
        if valid:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        aside = folder.with_name(f"{folder.name}.bad{os.getpid()}")
        try:
            folder.rename(aside)
        except FileNotFoundError:
            continue
        shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
