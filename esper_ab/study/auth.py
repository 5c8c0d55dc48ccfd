"""Ray token authentication, as esper-ab handles it (no ray import here).

Ray 2.60 turns token authentication on by default: a local ``ray.init()`` and ``ray start
--head`` create ``~/.ray/auth_token`` when it is missing, and a token cluster accepts only
clients that present the token. esper-ab never switches it off, and never guesses:

- embedded local Ray (no ``--address``): Ray uses the token; esper-ab creates a missing
  ``~/.ray/auth_token`` first, exclusively and 0600 (``ensure_token``), so two commands
  starting at once on a fresh home cannot each write their own.
- joining a cluster (``--address``): Ray's own rule applies. With ``--address auto`` Ray
  enables token mode by itself when a token is available; with an explicit address it
  does not, so for a token cluster export ``RAY_AUTH_MODE=token`` and provide the cluster's
  token (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``). Turning token
  mode on towards a cluster *without* auth breaks its workers, hence no guessing.
  An authentication failure becomes one line that says this.
- submitting a job (``JobSubmissionClient``, ``ray job submit``): the client needs
  ``RAY_AUTH_MODE=token`` to send the token; ``job_client_auth()`` sets it when it is unset
  and a token is available (a cluster without auth ignores it).
- ``RAY_AUTH_MODE=disabled`` set by you is respected, with a warning.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

__all__ = ["AUTH_HINT", "auth_mode", "claim_token", "ensure_token", "job_client_auth",
           "token_available", "token_path"]

AUTH_HINT = ("for a token cluster export RAY_AUTH_MODE=token and put the cluster's token in "
             "~/.ray/auth_token (or RAY_AUTH_TOKEN)")


def token_path() -> Path:
    """Where Ray looks for a local cluster's token (``RAY_AUTH_TOKEN_PATH``, else
    ``~/.ray/auth_token``)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))


def token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or token_path().is_file()


def ensure_token(path: Path | None = None) -> bool:
    """Create the token file (default ``token_path()``) as Ray would, 64 hex characters,
    readable by its owner only, unless it exists; True when this call created it. Ray writes
    a missing token with a plain ``open(path, "w")``, so two local clusters starting at once
    on a fresh home could each write their own; creating it first, exclusively, leaves one
    token for both (a concurrent creator wins and is left alone)."""
    path = path or token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return True


def claim_token() -> None:
    """Before a local Ray starts: create its token file exclusively (``ensure_token``), so
    that Rays starting at once on a fresh home share one token instead of each writing its
    own over the other's. Only the default ``~/.ray/auth_token``, the one Ray itself
    creates: not when token authentication is off, nor for a token from ``RAY_AUTH_TOKEN``
    or a path the user named (``RAY_AUTH_TOKEN_PATH``: Ray asks for that file to exist). A
    file that cannot be created is left to Ray."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or \
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    try:
        ensure_token()
    except OSError:
        pass


def auth_mode() -> str:
    """The mode this process will use, in words (warns when auth is disabled by choice)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None:
        return "Ray's default"
    if mode.lower() == "disabled":
        print("esper-ab: warning: RAY_AUTH_MODE=disabled: Ray token authentication is off "
              "by your choice; never do this on a shared cluster", file=sys.stderr)
    return mode.lower()


def job_client_auth() -> str:
    """Prepare this process to submit jobs to a (token) cluster; return the mode."""
    if os.environ.get("RAY_AUTH_MODE") is None and token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
    return auth_mode()
