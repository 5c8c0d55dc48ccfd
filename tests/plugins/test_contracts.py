"""The contract checks, one by one, each against a deliberately broken variant of the
example workload: ``esper-ab validate SPACE.yaml`` prints one line naming the fault and the
fix, exits 2, and writes nothing."""

from __future__ import annotations

import os

import pytest
import yaml

from esper_ab.cli import main


def write_space(folder, name, **workload):
    data = {"name": "contract", "workloads": [{"name": name, "episode": {"size": "tiny"},
                                               **workload}],
            "replicates": 3, "traces": {"source": "record"},
            "strategies": [{"name": "baseline"}], "num_samples": 2,
            "resources": {"cpu": 1}}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


BROKEN = [
    # the import path does not resolve
    ("no_such_package_xyz.workloads:WORKLOAD", {}, "module 'no_such_package_xyz.workloads' "
                                                   "does not import"),
    ("shapes_workload:NO_SUCH_ATTRIBUTE", {}, "has no attribute 'NO_SUCH_ATTRIBUTE'"),
    ("broken_shapes:NOT_A_PLUGIN", {}, "is a dict, not a WorkloadPlugin"),
    ("no-such-registered-name", {}, "unknown workload 'no-such-registered-name'"),
    # a required method or attribute is missing
    ("broken_shapes:NO_SLOTS", {}, "its host ShapesNet has no slot_names"),
    # a slot name is unknown
    ("shapes", {"slots": ["neck"]}, "has no slot 'neck'; use one of ['stem', 'body']"),
    # a blueprint cannot be built at (does not fit) a slot
    ("broken_shapes:THIRDS", {"blueprints": ["grouped"]},
     "blueprint grouped does not fit slot body (width 16): it needs a multiple of 3"),
    ("shapes", {"slots": ["stem"], "blueprints": ["mixer"]},
     "blueprint mixer does not fit slot stem (width 8): it fits only slots ['body']"),
    ("broken_shapes:WIDENS", {}, "blueprint widen at slot body maps h of shape"),
    # the host is not bit-identical while seeds incubate
    ("broken_shapes:NOT_IDENTICAL", {}, "the host is not bit-identical while seeds incubate"),
    # data is not deterministic per replicate
    ("broken_shapes:UNSEEDED", {}, "data is not deterministic per replicate: two builds of "
                                   "replicate 0 differ in train_x"),
    # a factory raises
    ("broken_shapes:HOST_RAISES", {}, "its host factory raised RuntimeError: weights file "
                                      "missing: fix the host factory"),
    ("broken_shapes:DATA_RAISES", {}, "its data loader (replicate 0) raised OSError: no such "
                                      "dataset folder"),
    ("broken_shapes:SEED_RAISES", {}, "blueprint exploding's factory at slot body (width 16) "
                                      "raised RuntimeError: cannot build at 16"),
]


@pytest.mark.parametrize(("name", "workload", "needle"), BROKEN,
                         ids=[b[0].split(":")[-1] + "-" + "-".join(b[1]) for b in BROKEN])
def test_each_broken_contract_is_one_line_exit_2_and_nothing_written(
        shapes_installed, tmp_path, monkeypatch, capsys, name, workload, needle):
    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path, name, **workload)
    before = _listing(tmp_path)
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("esper-ab: error: ") and "\n" not in err and "Traceback" not in err
    assert needle in err, err
    assert "ok --" not in captured.out
    assert _listing(tmp_path) == before


def test_the_example_passes_every_check_and_validate_says_so(shapes_installed, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path, "shapes", slots=["stem", "body"])
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "contract of shapes: ok -- slots stem (width 8), body (width 16); 4 blueprints" in out
    assert not os.path.exists(tmp_path / ".esper_ab_cache")


def test_the_same_checks_pass_for_every_builtin_workload():
    from esper_ab.plugins import check_workload, workload_config

    for name, slots in (("synthetic-cnn", ["block1.post_pool", "block2.pre_pool"]),
                        ("synthetic-seq", ["layer1"]), ("digits", ["block2.pre_pool"])):
        report = check_workload(workload_config(name), slots=slots)
        assert report.slots == tuple(slots)
        assert "placebo" in report.blueprints


@pytest.mark.parametrize("command", ["record", "sweep"])
def test_record_and_sweep_check_the_contract_before_anything_runs(
        shapes_installed, tmp_path, monkeypatch, capsys, command):
    # UNSEEDED passes the spec's structural checks: only the full contract catches it
    monkeypatch.chdir(tmp_path)
    path = write_space(tmp_path, "broken_shapes:UNSEEDED")
    before = _listing(tmp_path)
    argv = [command, str(path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"] \
        if command == "sweep" else [command, str(path), "--out", str(tmp_path / "traces")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esper-ab: error: ") and "\n" not in err
    assert "data is not deterministic per replicate" in err
    assert _listing(tmp_path) == before        # no traces, no cache, no tracking store
