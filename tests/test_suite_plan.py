"""The xdist plan of ``make test`` (tests/suite_plan.py): the longest modules first, the rest
in pytest's order, and one Ray token written before the workers start."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from suite_plan import HEAVY_FIRST, heavy_first, module_of

from esper_ab.study.auth import ensure_token

ROOT = Path(__file__).resolve().parents[1]


class Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def test_heavy_modules_move_to_the_front_in_their_order_and_the_rest_keeps_its_order():
    ids = ["tests/a/test_x.py::t1", "tests/a/test_x.py::t2", "tests/b/test_long.py::k1",
           "tests/c/test_y.py::t1", "tests/b/test_long.py::k2", "tests/d/test_longer.py::z",
           "tests/e/test_z.py::t[1]"]
    got = [i.nodeid for i in heavy_first([Item(n) for n in ids],
                                         ("tests/d/test_longer.py", "tests/b/test_long.py"))]
    assert got == ["tests/d/test_longer.py::z", "tests/b/test_long.py::k1",
                   "tests/b/test_long.py::k2", "tests/a/test_x.py::t1",
                   "tests/a/test_x.py::t2", "tests/c/test_y.py::t1", "tests/e/test_z.py::t[1]"]
    assert module_of("tests/e/test_z.py::t[a::b]") == "tests/e/test_z.py"


def test_every_heavy_module_exists_once():
    """A renamed module would silently drop to its alphabetical place."""
    assert len(set(HEAVY_FIRST)) == len(HEAVY_FIRST)
    missing = [m for m in HEAVY_FIRST if not (ROOT / m).is_file()]
    assert not missing, f"tests/suite_plan.py HEAVY_FIRST names missing modules: {missing}"


def test_make_test_keeps_the_collection_order_of_whole_modules():
    """heavy_first only matters when xdist neither splits modules nor re-sorts them."""
    make = (ROOT / "Makefile").read_text()
    xdist = re.search(r"^XDIST \?= (.*)$", make, re.M).group(1).split()
    assert xdist[:2] == ["-n", "2"]
    assert "loadscope" in xdist and "--no-loadscope-reorder" in xdist
    assert re.search(r"^test: .*\n\t.*pytest .*\$\(XDIST\)", make, re.M)


def test_a_missing_token_is_created_private_and_an_existing_one_is_left_alone(tmp_path):
    path = tmp_path / "home" / ".ray" / "auth_token"
    assert ensure_token(path) is True
    token = path.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) is False and path.read_text() == token
    mine = tmp_path / "mine"
    mine.write_text("user-token")
    assert ensure_token(mine) is False and mine.read_text() == "user-token"


def test_the_controller_of_an_xdist_run_writes_the_token_before_the_workers(tmp_path):
    """A real ``pytest -n 2`` run in a scratch folder with this conftest: the workers see
    the token the controller wrote (one token, the same in both)."""
    pytest.importorskip("xdist")
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "suite_plan.py").write_text((ROOT / "tests" / "suite_plan.py").read_text())
    (tmp_path / "test_seen.py").write_text(textwrap.dedent("""
        import os, pathlib, pytest
        @pytest.mark.parametrize("k", range(4))
        def test_token(k):
            p = pathlib.Path.home() / ".ray" / "auth_token"
            out = pathlib.Path(os.environ["SEEN_DIR"]) / os.environ["PYTEST_XDIST_WORKER"]
            out.write_text(p.read_text())
    """))
    token, seen = tmp_path / ".ray" / "auth_token", tmp_path / "seen"
    seen.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),    # the default token path
           "SEEN_DIR": str(seen),    # the conftest imports esper_ab: this checkout's
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-n", "2", "--dist", "loadscope", "--no-loadscope-reorder",
                        "--rootdir", str(tmp_path), str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p.read_text() for p in seen.iterdir()} == {token.read_text()}
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())
