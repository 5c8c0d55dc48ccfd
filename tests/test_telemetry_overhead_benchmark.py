"""benchmarks/telemetry_overhead.py runs on both host clocks (no time is asserted)."""

from __future__ import annotations

import importlib.util
import math
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "telemetry_overhead.py"
_spec = importlib.util.spec_from_file_location("telemetry_overhead", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["telemetry_overhead"] = bench          # dataclasses look their module up
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("clock", ["cpu", "wall"])
def test_one_run_on_each_host_clock(clock, monkeypatch):
    reads = {"n": 0}
    real = bench.CLOCKS[clock]

    def counted():
        reads["n"] += 1
        return real()

    monkeypatch.setitem(bench.CLOCKS, clock, counted)
    r = bench.one_run(bench.cnn, torch.device("cpu"), pairs=1, steps=1, clock=clock)
    # 4 blocks (2 warm-up, 1 pair) x (3 marks per step + 2 after the block)
    assert reads["n"] == 4 * (3 + 2)
    assert all(math.isfinite(v) and v > 0 for v in (r.ratio, r.plain_s, r.measured_s))
    assert math.isfinite(r.collect_share) and r.collect_share >= 0


def test_cpu_clock_is_the_process_cpu_time():
    assert bench.CLOCKS == {"cpu": time.process_time, "wall": time.perf_counter}


def test_ratio_is_the_median_of_paired_blocks(monkeypatch):
    """A counting clock (each read one tick later) and a collect() that costs 5 more ticks:
    every measured block spans 9 ticks and every plain block 4 (start, before, after, end,
    done), so each pair's ratio is 9/4; the ratio of medians is (8 + 1) / 3."""
    now = {"t": 0}

    def tick():
        now["t"] += 1
        return float(now["t"])

    real_collect = bench.GradientCollector.collect

    def costly_collect(self):
        now["t"] += 5
        return real_collect(self)

    monkeypatch.setitem(bench.CLOCKS, "cpu", tick)
    monkeypatch.setattr(bench.GradientCollector, "collect", costly_collect)
    r = bench.one_run(bench.cnn, torch.device("cpu"), pairs=3, steps=1)
    assert r.ratio == 9 / 4
    assert r.ratio_of_medians == (8 + 1) / 3
    assert r.collect_share == (6 + 1) / 3
    assert r.faults_per_step >= 0


def _faults_per_step(malloc: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, str(_PATH), "--device", "cpu", "--hosts", "gpt",
                          "--runs", "1", "--pairs", "8", "--steps", "3", "--malloc", malloc],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    found = re.search(r"minor page faults per step (\d+)", out)
    assert found and "ratio median" in out, out
    return out.splitlines()[0], int(found.group(1))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_steady_malloc_keeps_freed_memory_as_episodes_do():
    """--malloc steady takes the thresholds episodes train with (``episodes._memory``): the
    GPT host's steps stop faulting their freed activations in again."""
    header, steady = _faults_per_step("steady")
    assert f"malloc steady ({bench.STEADY})" in header and "256 MiB" in bench.STEADY
    header, default = _faults_per_step("default")
    assert "malloc default;" in header
    assert default > 200 and steady * 10 < default
