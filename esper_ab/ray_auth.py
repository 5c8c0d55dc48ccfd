"""Ray token authentication, as esper-ab handles it (no ray import here).

Ray 2.60 turns token authentication on by default: a local ``ray.init()`` writes
``~/.ray/auth_token`` when it is missing, and a cluster started by ``ray start`` or the cluster
launcher accepts only clients that present the token. esper-ab never switches it off:

- embedded local Ray: nothing to do (Ray creates and uses the token);
- joining a cluster (``--address``) or submitting a job: when ``RAY_AUTH_MODE`` is unset and a
  token is available (``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or
  ``~/.ray/auth_token``), ``RAY_AUTH_MODE=token`` is set for this process so the client
  presents it (a client talking to a token cluster needs that);
- an explicit ``RAY_AUTH_MODE`` is respected; ``disabled`` prints a warning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["client_auth_mode", "token_available"]


def token_available() -> bool:
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or path.is_file()


def client_auth_mode() -> str:
    """Prepare this process to talk to a (token) cluster; return the mode in effect."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        if mode.lower() == "disabled":
            print("esper-ab: warning: RAY_AUTH_MODE=disabled: Ray token authentication is off "
                  "by your choice; never do this on a shared cluster", file=sys.stderr)
        return mode.lower()
    if token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
        return "token"
    return "default (no token found: a token cluster will refuse this client)"
