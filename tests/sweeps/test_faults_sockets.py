"""Say what listens (issue 19, item 8).

The embedded Ray is started the way a sweep starts it (``connect_ray``, in a fresh
interpreter), and every LISTEN socket of the driver and of each Ray helper is listed with
psutil. All of them are on the loopback interface, none is the dashboard's web port (8265),
and Ray's dashboard head process -- which Ray starts even with ``include_dashboard=False``
-- runs without its web UI (``--disable-frontend``, the usage-stats module only) and bound to
127.0.0.1. README ("Loopback by default") and docs/GUARANTEES.md say so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@pytest.fixture(scope="module")
def listing():
    proc = subprocess.run([sys.executable, str(HERE / "listening_sockets.py"), "5"],
                          capture_output=True, text=True, timeout=300)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1])["processes"]


def test_every_listening_socket_of_an_embedded_ray_is_on_loopback(listing):
    sockets = [(p["cmd"].split()[0].rsplit("/", 1)[-1], s) for p in listing
               for s in p["listen"]]
    for name, sock in sockets:
        print(f"{name:24s} listens on {sock}")     # the list, for the record (pytest -s)
    assert sockets, "the embedded Ray listed no socket at all"
    assert all(sock.rsplit(":", 1)[0] in LOOPBACK for _, sock in sockets), sockets
    assert not any(sock.endswith(":8265") for _, sock in sockets)


def test_rays_dashboard_process_runs_without_its_web_ui_on_loopback(listing):
    dashboards = [p for p in listing if "dashboard/dashboard.py" in p["cmd"]]
    for p in dashboards:
        assert "--disable-frontend" in p["cmd"] and "--host=127.0.0.1" in p["cmd"]
        assert "--modules-to-load=UsageStatsHead" in p["cmd"]
        assert all(s.rsplit(":", 1)[0] in LOOPBACK for s in p["listen"])
