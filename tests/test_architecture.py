"""The package's import graph: no cycles, private modules stay private, one module per
heavy integration (``ray.tune``, ``mlflow``), and a study's three rooms layered: the
foundation (``study``) under two drivers (``tune_driver``, ``fidelity``) that never import
each other.

Every import statement counts, function-local ones included (a local import that closes a
cycle still is one); imports under ``if TYPE_CHECKING:`` do not run and are left out. An
import of ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, so those are edges too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "esper_ab"
TUNE_RUNNER = "esper_ab.tune_driver.tune_runner"
TRACKING = "esper_ab.tracking"
# A study's rooms, each a folder, and the rooms each may reach (directly or through anything
# it imports). The foundation knows neither driver; each driver knows the foundation only.
STUDY = "esper_ab.study"
TUNE_DRIVER = "esper_ab.tune_driver"
FIDELITY = "esper_ab.fidelity"
ROOMS = {STUDY: set(), TUNE_DRIVER: {STUDY}, FIDELITY: {STUDY}}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name: str) -> bool:
    return (PKG.parent / Path(*name.split(".")) / "__init__.py").is_file()


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if hasattr(n, "lineno"):
                        lines.add(n.lineno)
    return lines


def _resolve(module: str, names: list[str], known: set[str]) -> set[str]:
    """What ``from module import names`` loads: the module, or its submodules by name."""
    out = {module} if module in known else set()
    for n in names:
        if f"{module}.{n}" in known:
            out.add(f"{module}.{n}")
    return out


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    edges: dict[str, set[str]] = {m: set() for m in known}
    external: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: set[str] = set()
            if isinstance(node, ast.Import):
                for a in node.names:
                    external[mod].add(a.name)
                    targets |= {a.name} if a.name in known else set()
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                external[mod].add(node.module)
                for a in node.names:
                    external[mod].add(f"{node.module}.{a.name}")
                targets |= _resolve(node.module, [a.name for a in node.names], known)
            for t in targets:
                parts = t.split(".")
                for i in range(1, len(parts) + 1):      # a.b.c runs a, a.b, then a.b.c
                    parent = ".".join(parts[:i])
                    if parent in known and parent != mod and not mod.startswith(parent + "."):
                        edges[mod].add(parent)
    return edges, external


EDGES, EXTERNAL = _graph()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_the_graph_sees_the_package():
    assert len(EDGES) > 40 and "esper_ab.gate" in EDGES["esper_ab.replay.engine"]


def test_no_import_cycles():
    assert _cycles(EDGES) == []


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_module_imports_another_packages_private_module():
    bad = []
    for mod, targets in EDGES.items():
        home = mod if _is_package(mod) else mod.rsplit(".", 1)[0]
        for t in targets:
            parts = t.split(".")
            if any(p.startswith("_") and p != "__init__" for p in parts):
                owner = ".".join(parts[: next(i for i, p in enumerate(parts)
                                               if p.startswith("_"))])
                if home != owner and not home.startswith(owner + "."):
                    bad.append(f"{mod} -> {t}")
    assert bad == []


@pytest.mark.parametrize(("prefix", "allowed"), [("ray.tune", TUNE_RUNNER),
                                                 ("mlflow", TRACKING)])
def test_one_module_per_integration(prefix, allowed):
    users = sorted(m for m, ext in EXTERNAL.items()
                   if any(e == prefix or e.startswith(prefix + ".")
                          or (prefix == "ray.tune" and e == "ray.tune") for e in ext))
    assert users == [allowed]


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(EDGES[m])
    return seen


def test_recording_workers_never_load_ray_tune():
    assert TUNE_RUNNER not in _closure("esper_ab.study.recording")
    assert TUNE_RUNNER not in _closure("esper_ab.study.runtime")


def _room(module: str) -> str | None:
    return next((r for r in ROOMS if module == r or module.startswith(r + ".")), None)


def _room_violations(edges: dict[str, set[str]]) -> list[str]:
    """Every path from a module of one room into a room it may not reach, as
    ``module -> the first module of the forbidden room on the way``."""
    bad = []
    for mod in sorted(edges):
        own = _room(mod)
        if own is None:
            continue
        seen, todo = {mod}, [mod]
        while todo:
            m = todo.pop()
            for t in sorted(edges.get(m, ())):
                if t in seen:
                    continue
                seen.add(t)
                other = _room(t)
                if other is not None and other != own and other not in ROOMS[own]:
                    bad.append(f"{mod} -> {t}")
                else:
                    todo.append(t)
    return bad


def test_the_rooms_are_folders():
    """The three rooms exist as packages, and no module of the package sits in a former
    room (``esper_ab.sweeps``, which was foundation and Tune driver in one)."""
    assert all(_is_package(r) for r in ROOMS)
    assert not [m for m in EDGES if m == "esper_ab.sweeps" or m.startswith("esper_ab.sweeps.")]
    assert TUNE_RUNNER.startswith(TUNE_DRIVER + ".")


def test_the_foundation_knows_no_driver_and_no_driver_knows_the_other():
    assert _room_violations(EDGES) == []


def test_the_room_checker_flags_the_old_knot():
    """The edges that tied sweeps and fidelity into one knot (before the split), by rooms:
    the Tune driver reaching the fidelity drivers' confirmation, the fidelity driver
    reaching the Tune driver's batches, the foundation reaching a driver (also through a
    module outside every room)."""
    knot = {f"{TUNE_DRIVER}.tune_runner": {f"{FIDELITY}.holdout", f"{STUDY}.spec"},
            f"{TUNE_DRIVER}.batches": {f"{FIDELITY}.replay_sweep"},
            f"{FIDELITY}.multi": {f"{STUDY}.runtime", f"{TUNE_DRIVER}.batches"},
            f"{STUDY}.runtime": {"esper_ab.other"},
            "esper_ab.other": {f"{FIDELITY}.recording"},
            f"{FIDELITY}.holdout": {f"{STUDY}.spec"}, f"{STUDY}.spec": set(),
            f"{FIDELITY}.replay_sweep": set(), f"{FIDELITY}.recording": set(),
            f"{TUNE_DRIVER}.trainables": {f"{STUDY}.spec"}}
    assert _room_violations(knot) == [
        f"{FIDELITY}.multi -> {TUNE_DRIVER}.batches",
        f"{STUDY}.runtime -> {FIDELITY}.recording",
        f"{TUNE_DRIVER}.batches -> {FIDELITY}.replay_sweep",
        f"{TUNE_DRIVER}.tune_runner -> {FIDELITY}.holdout",
    ]


def test_the_core_needs_neither_ray_nor_mlflow():
    for core in ("esper_ab.gradients", "esper_ab.strategies", "esper_ab.gate",
                 "esper_ab.trial", "esper_ab.stats", "esper_ab.replay"):
        mods = _closure(core)
        assert TRACKING not in mods and TUNE_RUNNER not in mods, core
        ext = set().union(*(EXTERNAL[m] for m in mods))
        assert not any(e == "ray" or e.startswith(("ray.", "mlflow")) for e in ext), core


def test_subpackages_curate_their_api():
    for pkg in ("episodes", "replay", "study", "tune_driver", "fidelity", "gate", "strategies",
                "stats"):
        tree = ast.parse((PKG / pkg / "__init__.py").read_text())
        names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                 if isinstance(t, ast.Name)]
        assert "__all__" in names, pkg


def test_no_file_is_over_about_400_lines():
    long = {p.relative_to(PKG).as_posix(): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}


def test_a_replay_trial_worker_never_imports_torch():
    """What a batched replay trial's worker imports (its setup hook, the trial functions,
    replay, strategies, the gate, stats) loads no torch: a Tune trial worker starts once
    per sweep, and torch alone was half of its import time. The collector still loads
    torch on first use."""
    code = ("import sys; import esper_ab.tune_driver.trainables as t; t.warm_worker(); "
            "import esper_ab.replay, esper_ab.strategies, esper_ab.gate, esper_ab.stats; "
            "from esper_ab.gradients import GradStats, LAYER_TYPES; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "from esper_ab.gradients import GradientCollector; "
            "assert 'torch' in sys.modules and GradientCollector.__module__ == "
            "'esper_ab.gradients._collector'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
