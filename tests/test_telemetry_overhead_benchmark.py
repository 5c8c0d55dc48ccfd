"""benchmarks/telemetry_overhead.py runs on both host clocks (no time is asserted)."""

from __future__ import annotations

import importlib.util
import math
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
