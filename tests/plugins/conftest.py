"""Fixtures of the plug-in tests: the example package installed with pip, as a user would.

``pip install --no-deps --no-build-isolation --target DIR`` builds a wheel of a copy of
``examples/custom_workload`` and installs it (with its entry point) into a temporary folder
that goes on ``sys.path`` and on ``PYTHONPATH`` (for the CLI's Ray workers), once per session.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_workload"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@pytest.fixture(scope="session")
def shapes_installed(tmp_path_factory):
    """The example package pip-installed into a temporary target; yields that folder."""
    root = tmp_path_factory.mktemp("shapes_pkg")
    source, target = root / "src", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    old_path = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), old_path) if p)
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path
