"""Tensor files of the episode cache, loaded safely (private to ``esper_ab.episodes``).

The cache folder has predictable names (``host-<hash>.pt``) and a cluster keeps it on shared
storage, so a cached file is untrusted input:

- files are plain state dicts (tensors, numbers, strings, lists, dicts) read with
  ``torch.load(weights_only=True)``: a pickle that would run code is refused by torch's
  restricted unpickler, never executed;
- each folder keeps ``index.json``, the sha256 of every file written there (updated under a
  ``filelock``, with the file itself, so concurrent writers stay consistent). A file whose
  bytes no longer match its recorded hash is refused with one line; a file the index does
  not know (an older cache, or an index entry removed) is not loaded at all: it is
  recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from esper_ab.errors import DataError, shown

__all__ = ["INDEX", "load_tensors", "save_tensors"]

INDEX = "index.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_index(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _lock(folder: Path) -> FileLock:
    return FileLock(str(folder / f"{INDEX}.lock"), timeout=120)


def save_tensors(path: str | Path, blob: dict[str, Any]) -> None:
    """Write ``blob`` (a plain state dict) to ``path`` and record its sha256."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f"{p.name}.tmp{os.getpid()}")
    torch.save(blob, tmp)
    digest = _sha256(tmp)
    with _lock(p.parent):
        index = _read_index(p.parent)
        index[p.name] = digest
        idx_tmp = p.parent / f"{INDEX}.tmp{os.getpid()}"
        idx_tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        tmp.replace(p)
        idx_tmp.replace(p.parent / INDEX)


def load_tensors(path: str | Path) -> dict[str, Any] | None:
    """The state dict cached at ``path``; None when there is none the index vouches for
    (the caller recomputes it). ``DataError`` (one line) when the file was changed."""
    p = Path(path)
    if not p.is_file():
        return None
    with _lock(p.parent):
        expected = _read_index(p.parent).get(p.name)
        if expected is None:
            return None
        data = p.read_bytes()        # hashed and loaded from the same bytes
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(f"cached file {shown(str(p))} does not match the sha256 its cache "
                        f"index recorded ({expected[:12]}..., found {actual[:12]}...): it was "
                        "changed after it was written; delete it to recompute it")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad pickle
        first = " ".join(str(exc).split())[:160]
        raise DataError(f"cached file {shown(str(p))} is not a plain tensor state dict "
                        f"({type(exc).__name__}: {first}): delete it to recompute it") from None
    if not isinstance(blob, dict):
        raise DataError(f"cached file {shown(str(p))} holds {type(blob).__name__}, not a "
                        "state dict: delete it to recompute it")
    return blob
