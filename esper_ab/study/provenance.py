"""Where a sweep's numbers come from: the package versions and the git commit, logged on the
parent run (pure: no MLflow; ``esper_ab.tracking`` re-exports both)."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["PACKAGES", "git_commit", "package_versions"]

PACKAGES = ("esper-ab", "torch", "ray", "optuna", "mlflow", "numpy", "scipy", "pandas",
            "statsmodels", "pydantic", "matplotlib")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(cwd: Path | None = None) -> str:
    """``HEAD`` of the repository holding esper_ab (``+dirty`` when it has changes)."""
    where = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
