"""``benchmarks/gpu_throughput.py`` is the one short script a GPU session runs (issue 24): it
must work the first time it meets a GPU. Without CUDA it says so in one line (exit 2); a
smoke run (``--allow-cpu``: the "GPU" arms on the CPU, tiny episodes) goes through every
arm, prints the plans and saves figures that ``gpu: auto`` reads back; on CUDA (``gpu``
marker) the same run measures the real GPU arm."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esper_ab.study.resources import load_throughput, throughput_plan

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"
RATE = r"([0-9]+(?:\.[0-9]+)?) episodes/min"


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_without_cuda_it_says_so_in_one_line_and_exits_2():
    out = _run("--shares", "1")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_bad_shares_are_one_line_and_exit_2():
    out = _run("--shares", "0,x")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"--shares='0,x' --concurrency={len(os.sched_getaffinity(0))} --episodes=1: use "
        "positive integers (e.g. --shares 1,4,8)"]


def _check_run(out: subprocess.CompletedProcess, saved: Path, gpu_arm: int) -> None:
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    cpu = re.search(r"CPU only, 1 processes: " + RATE, text)
    arm = re.search(rf"{gpu_arm} per GPU: " + RATE, text)
    assert cpu and arm, text
    assert float(cpu.group(1)) > 0 and float(arm.group(1)) > 0
    assert "today's plan (gpu: auto, max_concurrent 1: 1 GPU each, 1 per GPU)" in text
    assert re.search(r"new plan measured: [0-9.]+ episodes/min = [0-9.]+x CPU only", text)
    # the figures it saved are the ones it printed, and gpu: auto plans from them
    tp = load_throughput(saved)
    assert tp is not None
    assert tp.cpu_per_process == pytest.approx(float(cpu.group(1)), abs=0.051)
    assert tp.gpu[gpu_arm] == pytest.approx(float(arm.group(1)), abs=0.051)
    share, why = throughput_plan(1, 1.0, 1.0, 1.0, tp)
    assert f"new plan: {why}" in text
    assert share == (0.0 if tp.cpu_per_process >= tp.gpu[gpu_arm] else 1.0)


@pytest.mark.slow
def test_a_smoke_run_measures_every_arm_and_saves_what_gpu_auto_reads(tmp_path):
    saved = tmp_path / "gpu_throughput.json"
    out = _run("--allow-cpu", "--size", "tiny", "--shares", "1", "--concurrency", "1",
               "--save", str(saved))
    _check_run(out, saved, 1)
    assert "no GPU (smoke run" in out.stdout


@pytest.mark.gpu
def test_on_cuda_the_gpu_arm_runs_on_the_gpu(tmp_path):
    saved = tmp_path / "gpu_throughput.json"
    out = _run("--size", "tiny", "--shares", "1", "--concurrency", "1", "--save", str(saved))
    _check_run(out, saved, 1)
    assert f"machine: {torch.cuda.get_device_name(0)}" in out.stdout
