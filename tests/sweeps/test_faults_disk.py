"""Full disk: one line and clean ends (issue 19, item 3).

A real sweep (real Ray, MLflow on sqlite, the Optuna journal) runs in a working folder that
is a real 24 MB tmpfs, mounted in a private mount namespace (``unshare -m``; skipped where
mounting is not allowed). Once its first trial has a run, the test fills the tmpfs. The sweep
must end with one error line naming the folder and no traceback, every run FAILED (none
RUNNING), ``state.json`` "failed" with the reason; after the filler is deleted, ``--resume``
finishes exactly the sweep's trials, every run FINISHED (the full disk tore the journal's
last record there: the resume moves it aside, see test_faults_journal.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import write_space

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
N = 4


def _in_namespace(tmp_path: Path, space: Path) -> dict:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1): cannot mount a private tmpfs here")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True, text=True)
    if probe.returncode:
        probe = subprocess.run([unshare, "-rm", "true"], capture_output=True, text=True)
        if probe.returncode:
            pytest.skip(f"mount namespaces are not allowed here: {probe.stderr.strip()}")
        flag = "-rm"
    else:
        flag = "-m"
    proc = subprocess.run([unshare, flag, sys.executable, str(HERE / "disk_full_run.py"),
                           str(tmp_path), str(space), str(N)],
                          capture_output=True, text=True, timeout=1500)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert "error" not in out, out
    return out


def test_a_full_disk_ends_the_sweep_in_one_line_and_resume_finishes_it(tmp_path):
    space = write_space(tmp_path, name="t_full", num_samples=N, max_concurrent=1,
                        replicates=2, strategies=[{"name": "exponent",
                                                   "params": {"a": {"low": 0.0,
                                                                    "high": 1.0}}}])
    out = _in_namespace(tmp_path, space)
    first, again = out["first"], out["resume"]

    assert first["rc"] == 2, first["stderr"][-3000:]
    assert "Traceback" not in first["stderr"]
    errors = [x for x in first["stderr"].splitlines() if "esper-ab:" in x]
    assert len(errors) == 1, first["stderr"][-3000:]
    assert "no space left on the device" in errors[0]
    assert str(tmp_path / "full") in errors[0] and "--resume" in errors[0]
    assert "RUNNING" not in first["statuses"] and first["statuses"].get("FAILED", 0) >= 2
    assert first["state"]["status"] == "failed"
    assert "no space left" in first["state"]["reason"]

    assert again["rc"] == 0, again["stderr"]
    assert again["children"] == N                         # exactly the sweep's trials
    assert again["statuses"] == {"FINISHED": N + 1}       # every run, the parent's too
    assert again["state"]["status"] == "finished" and again["state"]["reason"] is None


def test_a_full_cache_disk_outside_a_sweep_is_one_line(tmp_path):
    """``esper-ab episode`` whose --cache-dir is a 64 KB tmpfs: exit 2, one line naming the
    device's file, no traceback, no temporary file left behind."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-m", "true"]).returncode:
        pytest.skip("mount namespaces are not allowed here")
    cache = tmp_path / "cache"
    cache.mkdir()
    esper_ab = str(Path(sys.executable).with_name("esper-ab"))
    script = (f"mount -t tmpfs -o size=64k tmpfs {cache} || exit 99; "
              f"{esper_ab} episode --workload synthetic-cnn --replicate 0 --size tiny "
              f"--cache-dir {cache} --out {tmp_path / 'out'} --no-progress; rc=$?; "
              f"echo LEFT: $(find {cache} -name '*.tmp*' | wc -l); exit $rc")
    proc = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device" in lines[0], proc.stderr[-3000:]
    assert str(cache) in lines[0]
    assert "LEFT: 0" in proc.stdout
