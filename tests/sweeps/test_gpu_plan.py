"""``gpu: auto`` planned from measured throughput: a hand table, the never-slower-than-CPU
property against a brute-force search, and the measurement file."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from esper_ab.errors import ConfigError
from esper_ab.study.resources import (
    THROUGHPUT_ENV,
    Throughput,
    load_throughput,
    plan_resources,
    throughput_plan,
)
from esper_ab.study.spec import Resources

# issue 24's H100 figures (old code): 8 CPU processes 20.8/min on 16 cores, one GPU with
# 8 CUDA episodes 16.2/min and 16 of them 23.3/min
H100_OLD = Throughput(cpu_per_process=20.8 / 8, gpu={8: 16.2, 16: 23.3}, machine="H100")
NODE = [{"CPU": 16.0, "GPU": 1.0}]


@pytest.mark.parametrize("tp,max_concurrent,nodes,share", [
    (H100_OLD, 16, NODE, 0.0),          # 16 CPUs: 41.6/min beats the GPU's 23.3
    # 4 CPUs hold 4 tasks: CPU only 10.4/min; 4 on the GPU at 16.2/8 each: 8.1 (a bound)
    (H100_OLD, 16, [{"CPU": 4.0, "GPU": 1.0}], 0.0),
    (Throughput(2.6, {8: 200.0, 16: 300.0}), 16, NODE, 0.0625),   # 300 > 200 > 41.6
    (Throughput(2.6, {8: 200.0, 16: 300.0}), 8, NODE, 0.125),     # only 8 at once: 8/GPU
    (Throughput(2.6, {16: 300.0}), 4, NODE, 0.0625),  # 4 of 16 slots: 4 x 300/16 = 75
    (Throughput(2.6, {1: 2.0, 3: 9.0}), 16, [{"CPU": 16.0, "GPU": 2.0}], 0.0),  # 18 < 41.6
    (Throughput(2.6, {3: 90.0}), 16, NODE, 0.3333),   # 1/3 rounded down to Ray's 1e-4
])
def test_plan_from_measured_throughput_hand_table(tp, max_concurrent, nodes, share):
    plan = plan_resources(Resources(cpu=1, gpu="auto"), max_concurrent, nodes,
                          where="Ray cluster", throughput=tp)
    assert plan.gpu == share and plan.device == ("cuda" if share else "cpu")
    text = plan.describe()
    assert "measured episodes/min" in text and "chose" in text and "CPU only" in text
    assert "\n" not in text


def _brute_force(tp: Throughput, m_conc: int, cpus: float, gpus: int, cpu_per_task: float):
    """Every plan's rate, written out independently: CPU only, or n tasks per GPU."""
    m = max(1, min(m_conc, math.floor(cpus / cpu_per_task)))
    rates = {0: m * tp.cpu_per_process}
    for n, r in tp.gpu.items():
        rates[n] = min(m, gpus * n) * r / n
    return rates


def test_the_plan_is_never_slower_than_cpu_only_and_is_the_fastest():
    rng = random.Random(24)
    for _ in range(300):
        tp = Throughput(rng.uniform(0.5, 5.0),
                        {n: rng.uniform(0.5, 200.0) for n in rng.sample(range(1, 33), 4)})
        m_conc, cpus, gpus = rng.randint(1, 32), float(rng.choice([2, 8, 16, 64])), \
            rng.choice([1, 2, 4])
        share, _ = throughput_plan(m_conc, 1.0, cpus, gpus, tp)
        rates = _brute_force(tp, m_conc, cpus, gpus, 1.0)
        chosen = 0 if share == 0 else min(n for n in tp.gpu
                                           if math.floor(1e4 / n) / 1e4 == share)
        assert rates[chosen] >= rates[0]                      # never slower than CPU only
        assert rates[chosen] == pytest.approx(max(rates.values()))


def test_without_a_measurement_the_old_rule_holds_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(THROUGHPUT_ENV, str(tmp_path / "absent.json"))
    plan = plan_resources(Resources(cpu=1, gpu="auto"), 4, NODE, where="Ray cluster")
    assert plan.gpu == 0.25 and "no measured throughput" in plan.describe()


def test_the_measurement_file_round_trips_and_is_read_by_default(tmp_path, monkeypatch):
    path = tmp_path / "tp.json"
    path.write_text(H100_OLD.to_json())
    assert load_throughput(path) == H100_OLD
    monkeypatch.setenv(THROUGHPUT_ENV, str(path))
    plan = plan_resources(Resources(cpu=1, gpu="auto"), 16, NODE, where="Ray cluster")
    assert plan.gpu == 0.0 and "H100" in plan.describe()
    # a CPU-only cluster never reads it
    path.write_text("{not json")
    assert plan_resources(Resources(cpu=1, gpu="auto"), 2, [{"CPU": 2.0}]).gpu == 0.0
    assert load_throughput(tmp_path / "missing.json") is None


@pytest.mark.parametrize("text", ["{not json", '{"gpu": {"8": 1.0}}',
                                  '{"cpu_per_process": 1.0, "gpu": {"0": 3.0}}',
                                  '{"cpu_per_process": -1.0}'])
def test_a_bad_measurement_file_is_one_clear_error(tmp_path, text):
    path = tmp_path / "tp.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_throughput(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "gpu_throughput.py --save" in msg


def test_explicit_shares_ignore_the_measurement():
    for gpu, mc in itertools.product((0, 0.5), (1, 8)):
        plan = plan_resources(Resources(cpu=1, gpu=gpu), mc, NODE, throughput=H100_OLD)
        assert plan.gpu == gpu and plan.reason == ""
