"""``esper-ab episode`` through a real subprocess: tables, summary, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "esper_ab", "episode", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_tiny_episode_writes_tables_and_prints_the_summary(tmp_path):
    out = tmp_path / "out"
    proc = _run("--workload", "synthetic-cnn", "--replicate", "1", "--size", "tiny",
                "--out", str(out), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    seeds = pd.read_parquet(out / "synthetic-cnn-r1-seeds.parquet")
    trace = pd.read_parquet(out / "synthetic-cnn-r1-trace.parquet")
    assert len(seeds) == 9 and len(trace) == 9 * 20
    text = proc.stdout
    assert "G2 (esper_lite_baseline)" in text and "median R_base" in text
    lines = {line.split()[1]: line for line in text.splitlines()
             if line.startswith("block2.pre_pool")}
    assert "fail (threshold)" in lines["attention"]
    assert "dead at birth" in lines["conv_small"]
    assert "pass @ epoch 10" in lines["bottleneck"]
    assert "control" in lines["placebo"]
    assert "value forks" in text and ", together)" in text   # the CNN host: batched forks


@pytest.mark.parametrize("args,needle", [
    (["--workload", "mnist", "--replicate", "0"], "--workload 'mnist' is unknown"),
    (["--workload", "synthetic-cnn", "--replicate", "0", "--slot", "block9"], "slot='block9'"),
    (["--workload", "cifar10", "--replicate", "0", "--data-dir", "/no/such/dir"],
     "/no/such/dir"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, args, needle):
    proc = _run(*args, "--size", "tiny", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,needle", [
    (["--workload", "cifar10", "--replicate", "0"], "needs a data folder"),
    (["--workload", "synthetic-cnn", "--replicate", "0", "--gate", "nope.yaml"], "nope.yaml"),
    (["--workload", "synthetic-cnn"], "--replicate"),
    (["--workload", "synthetic-cnn", "--replicate", "0", "--device", "tpu"], "device='tpu'"),
    (["--workload", "synthetic-cnn", "--replicate", "0", "--forks", "both"], "'both'"),
])
def test_bad_inputs_in_process(tmp_path, capsys, args, needle):
    from esper_ab.cli import main

    assert main(["episode", *args, "--size", "tiny", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


@pytest.mark.parametrize("workload", ["mnist", "no_such_module_xyz:WORKLOAD"])
def test_a_bad_workload_creates_no_output_or_cache_folder(tmp_path, capsys, workload):
    from esper_ab.cli import main

    out, cache = tmp_path / "new-out", tmp_path / "new-cache"
    assert main(["episode", "--workload", workload, "--replicate", "0", "--size", "tiny",
                 "--out", str(out), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and workload in err[0]
    assert not out.exists() and not cache.exists()
