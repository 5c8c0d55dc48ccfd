"""Run by test_faults_disk.py inside its own mount namespace (``unshare -m``): a sweep whose
working folder is a small tmpfs that fills up while trials run, then ``--resume`` once there
is space again. Prints one JSON line with what happened.

    python disk_full_run.py FOLDER SPACE.yaml N_TRIALS
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = "24m"


def _rows(db: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def _statuses(db: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for (status,) in _rows(db, "select status from runs"):
        out[status] = out.get(status, 0) + 1
    return out


def _children(db: Path) -> int:
    return len(_rows(db, "select run_uuid from tags where key = 'mlflow.parentRunId'"))


def _fill(path: Path) -> int:
    """Write zeros until the device is full; the bytes written."""
    n = 0
    with path.open("wb", buffering=0) as fh:
        block = b"\0" * (64 * 1024)
        while True:
            try:
                n += fh.write(block)
            except OSError:
                break
        small = b"\0" * 512
        while True:
            try:
                n += fh.write(small)
            except OSError:
                return n


def _driver(work: Path, space: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE / "kill_driver.py"), space,
           f"sqlite:///{work / 'mlflow.db'}", str(work / "cache"), *extra]
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def main(folder: str, space: str, n: int) -> dict:
    work = Path(folder) / "full"
    work.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(work)],
                           capture_output=True, text=True)
    if mount.returncode:
        return {"skip": f"cannot mount a tmpfs: {mount.stderr.strip()}"}
    db = work / "mlflow.db"
    proc = _driver(work, space)
    deadline = time.monotonic() + 480   # hang guards, generous for a loaded machine
    while _children(db) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    filled = _fill(work / "filler.bin")
    try:
        out, err = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": "the driver did not end within 480 s on a full disk",
                "stderr": err[-3000:]}
    state_file = work / "esper_ab_sweeps" / Path(space).stem / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    first = {"rc": proc.returncode, "stderr": err, "stdout": out, "filled": filled,
             "statuses": _statuses(db), "state": state}
    (work / "filler.bin").unlink()
    again = _driver(work, space, "--resume")
    out2, err2 = again.communicate(timeout=400)
    final = {"rc": again.returncode, "stderr": err2[-3000:], "stdout": out2[-2000:],
             "statuses": _statuses(db), "children": _children(db),
             "state": json.loads(state_file.read_text()) if state_file.is_file() else {}}
    return {"first": first, "resume": final}


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)
