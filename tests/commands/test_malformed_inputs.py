"""Malformed input to every command: exit 2, exactly one stderr line, no traceback, and a
time bound (``pytest.mark.timeout`` guards each case: an unreachable server or a hang would
trip it). The named cases are the ones a reliability review found; hypothesis adds random
values in every field of a space.

The commands run in process (``esper_ab.cli.main``): each case must be refused before any
work starts, so none starts Ray or writes a store."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esper_ab.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))
from sweep_helpers import space  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("malformed")
    out = {"dir": d}

    def spec_file(name, **overrides):
        path = d / f"{name}.yaml"
        path.write_text(yaml.safe_dump(space(name="m", **overrides), sort_keys=False))
        out[name] = str(path)

    spec_file("good")
    spec_file("good_record", traces={"source": "record"})
    spec_file("replicates_huge", replicates=1_000_000_000)
    spec_file("split_huge", replicates={"search": 1_000_000_000, "confirm": 2})
    spec_file("num_samples_true", num_samples=True)
    spec_file("num_samples_huge", num_samples=10**12)
    spec_file("clamp_negative", gate={"clamp": -1})
    spec_file("epochs_negative", traces={"source": "synthetic", "synthetic": {"epochs": -5}})
    spec_file("epochs_word", traces={"source": "synthetic", "synthetic": {"epochs": "many"}})
    spec_file("synthetic_huge", traces={"source": "synthetic", "synthetic": {
        "epochs": 10_000, "steps_per_epoch": 10_000}})
    spec_file("step_tiny", strategies=[{"name": "exponent", "params": {
        "a": {"low": 0.0, "high": 1.0, "step": 1e-12}}}])
    spec_file("grid_huge", sampler={"kind": "grid"}, strategies=[{"name": "exponent", "params": {
        "a": {"low": 0.0, "high": 1.0, "grid_points": 1000}},
        "threshold": {"low": 0.0, "high": 1.0, "grid_points": 1000}}])
    spec_file("top_k_zero", selection={"top_k": 0})
    (d / "bomb.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                  for p, c in zip("abcdefgh", "bcdefghi", strict=True)))
    out["bomb"] = str(d / "bomb.yaml")
    (d / "deep.yaml").write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    out["deep"] = str(d / "deep.yaml")
    (d / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    out["latin1"] = str(d / "latin1.yaml")
    (d / "big.yaml").write_text("# " + "x" * (2 << 20) + "\n")
    out["big"] = str(d / "big.yaml")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    out["list"] = str(d / "list.yaml")
    (d / "afile").write_text("not a folder\n")
    out["afile"] = str(d / "afile")
    (d / "garbage.csv").write_bytes(b"\x00\xff\xfe" * 100)
    out["garbage_csv"] = str(d / "garbage.csv")
    for name, kind in (("cifar_labels", "labels"), ("cifar_pixels", "pixels"),
                       ("cifar_empty", "empty")):
        folder = d / name
        folder.mkdir()
        for batch in ("data_batch_1", "test_batch"):
            n = 0 if kind == "empty" else 4
            data = np.zeros((n, 3072), dtype=np.int64)
            labels = [0] * n
            if kind == "labels":
                labels[1] = 12
            if kind == "pixels":
                data[0, 0] = 300
            with open(folder / batch, "wb") as fh:
                pickle.dump({b"data": data, b"labels": labels}, fh, protocol=2)
        out[name] = str(folder)
    return out


def _refused(argv, capsys) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("esper-ab: error: "), err
    assert "Traceback" not in err
    return lines[0]


BAD_SPACES = ["replicates_huge", "split_huge", "num_samples_true", "num_samples_huge",
              "clamp_negative", "epochs_negative", "epochs_word", "synthetic_huge", "step_tiny",
              "grid_huge", "top_k_zero", "bomb", "deep", "latin1", "big", "list"]


@pytest.mark.parametrize("name", BAD_SPACES)
@pytest.mark.parametrize("command", ["validate", "sweep", "record", "replay"])
def test_a_bad_space_is_one_line_for_every_command(files, capsys, command, name):
    extra = ["--traces", files["dir"]] if command == "replay" else []
    line = _refused([command, files[name], *extra], capsys)
    assert len(line) < 1200


def test_a_bad_space_is_one_line_for_demo(files, capsys):
    _refused(["demo", "--space", files["epochs_word"]], capsys)


@pytest.mark.parametrize(("argv", "says"), [
    (["analyze", "{csv}", "--n-boot", "0"], "--n-boot"),
    (["analyze", "{csv}", "--n-boot", "1000000000"], "--n-boot"),
    (["analyze", "{csv}", "--n-perm", "-5"], "--n-perm"),
    (["analyze", "{garbage_csv}"], ""),
    (["analyze", "{dir}/missing.csv"], "missing.csv"),
    (["analyze", "{csv}", "--json", "/proc/nope/out.json"], "--json"),
    (["episode", "--workload", "synthetic-cnn", "--replicate", "-1"], "--replicate"),
    (["episode", "--workload", "synthetic-cnn", "--replicate", "0", "--gate", "{latin1}"],
     "UTF-8"),
    (["episode", "--workload", "synthetic-cnn", "--replicate", "0", "--gate", "{bomb}"],
     "alias"),
    (["episode", "--workload", "synthetic-cnn", "--replicate", "0", "--out", "{afile}"],
     "--out"),
    (["episode", "--workload", "synthetic-cnn", "--replicate", "0", "--cache-dir", "{afile}"],
     "--cache-dir"),
    (["episode", "--workload", "synthetic-cnn", "--replicate", "0", "--out",
      "/proc/nope/out"], "--out"),
    (["episode", "--workload", "synthetic-cnn", "--replicate", "0", "--threads", "0"],
     "--threads"),
    *[(["episode", "--workload", "cifar10", "--data-dir", "{" + k + "}", "--size", "tiny",
        "--replicate", "0", "--cache-dir", "{dir}/c", "--out", "{dir}/o"], "0..")
      for k in ("cifar_labels", "cifar_pixels")],
    (["episode", "--workload", "cifar10", "--data-dir", "{cifar_empty}", "--size", "tiny",
      "--replicate", "0", "--cache-dir", "{dir}/c", "--out", "{dir}/o"], "empty"),
    (["sweep", "{good}", "--tracking-uri", "http://127.0.0.1:{closed}"], "/health"),
    (["sweep", "{good}", "--address", "127.0.0.1:{closed}"], "--address"),
    (["sweep", "{good}", "--address", "not an address"], "--address"),
    (["sweep", "{good}", "--storage-dir", "{afile}"], "--storage-dir"),
    (["sweep", "{good}", "--cache-dir", "{afile}"], "--cache-dir"),
    (["sweep", "{good}", "--tracking-uri", "sqlite:///{dir}/typo/mlflow.db"], "does not exist"),
    (["sweep", "{good}", "--num-samples", "0"], "--num-samples"),
    (["replay", "{good}", "--traces", "{dir}/nowhere"], "nowhere"),
    (["replay", "{good}", "--traces", "{dir}", "--batch-size", "0"], "--batch-size"),
    (["record", "{good_record}", "--address", "127.0.0.1:{closed}"], "--address"),
    (["record", "{good_record}", "--cache-dir", "{afile}"], "--cache-dir"),
    (["export", "--experiment", "x", "--tracking-uri", "http://127.0.0.1:{closed}"],
     "/health"),
    (["export", "--experiment", "x", "--tracking-uri", "sqlite:///{dir}/none.db"],
     "does not exist"),
    (["export", "--experiment", "x", "--tracking-uri", "file:///tmp/x"], "--tracking-uri"),
    (["report", "--experiment", "x", "--out", "{dir}/r", "--tracking-uri",
      "http://127.0.0.1:{closed}"], "/health"),
    (["report", "--experiment", "x", "--out", "{afile}", "--tracking-uri",
      "sqlite:///{dir}/none.db"], ""),
    (["report", "--experiment", "x", "--out", "{dir}/r", "--n-boot", "0"], "--n-boot"),
    (["ingest", "esper-lite", "{dir}/nowhere", "--out", "{dir}/t.csv"], "nowhere"),
    (["ingest", "esper-lite", "{dir}", "--out", "/proc/nope/t.csv"], "--out"),
    (["strategies", "--jsn"], "--jsn"),
])
def test_named_cases_are_one_line(files, capsys, tmp_path, argv, says):
    csv = tmp_path / "d.csv"
    csv.write_text("replicate,blueprint,strategy,passed,pass_epoch,statistic,value,valuable\n"
                   "0,norm,baseline,True,3,0.1,0.5,True\n")
    fields = {**files, "csv": csv, "closed": _closed_port()}
    line = _refused([a.format(**fields) for a in argv], capsys)
    assert says in line, line
    assert not (Path(files["dir"]) / "typo").exists()
    assert not (Path(files["dir"]) / "none.db").exists()


def test_an_mlflow_server_that_never_answers_fails_in_seconds(files, capsys):
    """A port that accepts connections but never answers HTTP (MLflow's client would retry
    for minutes): the /health probe gives up after a few seconds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        port = s.getsockname()[1]
        line = _refused(["export", "--experiment", "x", "--tracking-uri",
                         f"http://127.0.0.1:{port}"], capsys)
    assert "/health" in line and "within" in line


FIELDS = ["name", "replicates", "num_samples", "max_concurrent", "strategies", "sampler",
          "traces", "gate", "selection", "scheduler", "resources", "objectives", "workloads",
          "confirm", "calibration_folds", "failure"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_random_values_in_any_field_never_trace_back(files, capsys, field, value):
    path = Path(files["dir"]) / "random.yaml"
    data = space(name="r")
    data[field] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rc = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if rc != 0:
        lines = captured.err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, captured.err


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.text(max_size=300))
def test_random_text_as_a_space_never_traces_back(files, capsys, text):
    path = Path(files["dir"]) / "text.yaml"
    path.write_text(text, encoding="utf-8")
    rc = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert rc == 2 and len(captured.err.strip().splitlines()) == 1, captured.err


@pytest.mark.slow
def test_validate_into_a_closed_pipe_is_one_line(files):
    """``esper-ab validate X | head -1``: the pipe closes; no BrokenPipeError traceback."""
    cmd = f"{sys.executable} -m esper_ab validate {files['good']} | head -1"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 1
    assert proc.stdout.startswith(files["good"])
