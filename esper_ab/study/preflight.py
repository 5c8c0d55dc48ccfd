"""Checks that run before anything starts (no Ray, no MLflow import): they fail in seconds,
in one line that names the value and the fix, where the libraries would hang or trace back.

- ``check_tracking_uri``: an ``http(s)://`` MLflow server must answer ``GET /health``
  within a few seconds (MLflow's own client retries for about 250 s); a ``sqlite:///`` store
  must sit in an existing folder, and must exist already where it is only read
  (``export``, ``report``): nothing is created at a path the user mistyped.
- ``check_ray_address``: a cluster address must accept a TCP connection within a few
  seconds (``ray.init`` was seen to wait more than 300 s on a closed port).
- ``usable_dir`` / ``writable_file``: a folder option that names a file, or a folder or
  output file that cannot be written, is refused before any work.
"""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from esper_ab.errors import ConfigError, shown

__all__ = ["PROBE_TIMEOUT_S", "check_ray_address", "check_tracking_uri", "not_a_file",
           "usable_dir", "writable_file"]

PROBE_TIMEOUT_S = 5.0
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


def _sqlite_path(uri: str) -> Path:
    rest = uri[len("sqlite:///"):]
    path = Path(rest)
    return path if path.is_absolute() else Path.cwd() / path


def check_tracking_uri(uri: str | None, *, existing: bool = False,
                       timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse a tracking URI that cannot work, in one line (see the module doc). ``None``
    is the default ``./mlflow.db``."""
    uri = uri or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///"):
        path = _sqlite_path(uri)
        if path.exists() and not path.is_file():
            raise ConfigError(f"--tracking-uri={shown(uri)}: {shown(str(path))} is not a "
                              "file: point it at a .db file")
        if existing and not path.is_file():
            raise ConfigError(f"--tracking-uri={shown(uri)}: {shown(str(path))} does not "
                              "exist: give the sqlite store the sweep wrote (e.g. "
                              "sqlite:///mlflow.db in the folder you ran the sweep from)")
        if not path.parent.is_dir():
            raise ConfigError(f"--tracking-uri={shown(uri)}: folder {shown(str(path.parent))} "
                              "does not exist: create it, or fix the path")
        return
    if uri.startswith(("http://", "https://")):
        _check_http(uri, timeout_s)


def _check_http(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    fix = "start the server (mlflow server --host 127.0.0.1 --port PORT ...) or fix the URI"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:   # noqa: S310 - http(s)
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        raise ConfigError(f"--tracking-uri={shown(uri)}: no MLflow server answers "
                          f"{shown(url)} within {timeout_s:g} s ({shown(str(why))}): "
                          f"{fix}") from None
    if status not in (200, 401, 403):
        raise ConfigError(f"--tracking-uri={shown(uri)}: {shown(url)} answered HTTP {status}, "
                          f"not an MLflow server: {fix}")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address, None for 'auto' without a known cluster."""
    if address == "auto":
        try:
            address = RAY_CURRENT_CLUSTER.read_text().strip()
        except OSError:
            return None   # Ray's own lookup says 'no running instance' at once
        if not address:
            return None
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(f"--address={shown(address)} is not HOST:PORT, ray://HOST:PORT or "
                          "auto: fix it (e.g. --address 10.0.0.5:6379)")
    return parts.hostname, port


def check_ray_address(address: str | None, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse a Ray address nobody listens on (TCP connect with a timeout); ``None`` and
    ``local`` start an embedded Ray and need no check."""
    if address is None or address == "local":
        return
    where = _host_port(address)
    if where is None:
        return
    host, port = where
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else \
            (exc.strerror or type(exc).__name__)
        raise ConfigError(f"--address={shown(address)}: nothing accepts connections at "
                          f"{host}:{port} within {timeout_s:g} s ({why}): start the cluster "
                          "(ray start --head) or fix the address") from None


def not_a_file(path: str | Path | None, option: str) -> None:
    """A folder option that may not exist yet (created on first use) must not name a file."""
    if path is not None and Path(path).expanduser().exists() and \
            not Path(path).expanduser().is_dir():
        raise ConfigError(f"{option}={shown(str(path))} is a file, not a folder: give a "
                          "folder path")


def usable_dir(path: str | Path, option: str, *, create: bool = True) -> Path:
    """A folder option: an existing folder, or one that can be created (``create``)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option}={shown(str(path))} is a file, not a folder: give a "
                          "folder path")
    if not p.exists():
        if not create:
            raise ConfigError(f"{option}={shown(str(path))} does not exist: give an existing "
                              "folder")
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{option}={shown(str(path))} cannot be created "
                              f"({exc.strerror or type(exc).__name__}): choose a writable "
                              "location") from None
    _probe_write(p, option, path)
    return p


def _probe_write(folder: Path, option: str, path: str | Path) -> None:
    """Create (and drop at once) an unnamed file in ``folder``: root passes ``os.access``
    everywhere, so only a real write tells."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(f"{option}={shown(str(path))} is not writable "
                          f"({exc.strerror or type(exc).__name__}): choose a writable "
                          "location") from None


def writable_file(path: str | Path, option: str) -> Path:
    """An output file option: its folder exists and is writable, the path is not a folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{option}={shown(str(path))} is a folder: give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"{option}={shown(str(path))}: folder {shown(str(parent))} does not "
                          "exist: create it or choose another path")
    _probe_write(parent, option, path)
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{option}={shown(str(path))} is not writable: choose a writable "
                          "path")
    return p
