"""The G2 gate: the esper-lite preset case by case, windows, EMA, and online == batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esper_ab.errors import ConfigError
from esper_ab.gate import PRESETS, Gate, GateConfig, StepMeasurement, build_gate
from esper_ab.gradients import GradStats

HOST = GradStats(sum_sq=100.0, sum_abs=500.0, numel=10_000, n_tensors=8, n_with_grad=8)


def seed_with_ratio(r: float, numel: int = 100) -> GradStats:
    """A seed whose baseline ratio (RMS_S / RMS_H) is exactly r."""
    host_rms_sq = HOST.sum_sq / HOST.numel
    return GradStats(sum_sq=r * r * host_rms_sq * numel, sum_abs=1.0, numel=numel, n_tensors=2,
                     n_with_grad=2)


def epochs_of(ratios_per_epoch, host=HOST):
    return [[StepMeasurement(seed_with_ratio(r), host) for r in ratios] for ratios in ratios_per_epoch]


def esper_lite_reference(step_ratios: list[list[float]], seed_numel=100, host_norm=10.0,
                         seed_norm=None):
    """esper-lite's G2 gradient check, written from its documented behaviour.

    Per batch: ratio = seed_norm/host_norm * sqrt(host_params/seed_params), forced to 0 when
    host_norm < 1e-8, raw ratio when seed_params == 0, clamped at 10; the last measured batch
    of the epoch is kept; pass at the first epoch >= 10 whose value is >= 0.10.
    """
    for e, ratios in enumerate(step_ratios, start=1):
        last = ratios[-1]
        if host_norm < 1e-8:
            last = 0.0
        last = min(last, 10.0)
        if e >= 10 and last >= 0.10:
            return True, e, last
    return False, None, last


@pytest.mark.parametrize("ratios,expected", [
    ([[0.5]] * 12, (True, 10)),              # passes exactly at the minimum epoch
    ([[0.5]] * 9, (False, None)),            # too few epochs
    ([[0.10]] * 10, (True, 10)),             # threshold is inclusive
    ([[0.0999]] * 15, (False, None)),
    ([[0.05]] * 11 + [[0.2]], (True, 12)),   # passes when it first crosses
    ([[0.5, 0.05]] * 12, (False, None)),     # only the LAST batch of an epoch counts
    ([[0.05, 0.5]] * 12, (True, 10)),
])
def test_esper_lite_preset_matches_reference(ratios, expected):
    d = Gate.from_preset("esper_lite_baseline").decide(epochs_of(ratios), blueprint="norm")
    ref = esper_lite_reference(ratios)
    assert (d.passed, d.epoch) == expected == ref[:2]


def test_esper_lite_clamps_at_10_and_keeps_unclamped():
    d = Gate.from_preset("esper_lite_baseline").decide(epochs_of([[50.0]] * 10))
    assert d.passed and d.value == 10.0 and d.clamped
    assert d.value_unclamped == pytest.approx(50.0)


def test_esper_lite_host_norm_below_floor_forces_zero():
    tiny_host = GradStats(sum_sq=(5e-9) ** 2, sum_abs=1e-8, numel=10_000, n_tensors=8,
                          n_with_grad=8)
    seed = GradStats(sum_sq=1.0, sum_abs=1.0, numel=100, n_tensors=1, n_with_grad=1)
    d = Gate.from_preset("esper_lite_baseline").decide([[StepMeasurement(seed, tiny_host)]] * 12)
    assert not d.passed and d.value == 0.0 and d.reason == "legacy_host_norm_zero"
    # esper-ab's own semantics: unmeasurable, not "fail with 0".
    d2 = Gate(GateConfig(min_epochs=1)).decide([[StepMeasurement(seed, tiny_host)]] * 12)
    assert not d2.passed and d2.state == "unmeasured" and d2.value is None


def test_esper_lite_zero_param_seed_uses_raw_ratio_zero():
    noop = GradStats(0.0, 0.0, 0, 0, 0)
    d = Gate.from_preset("esper_lite_baseline").decide([[StepMeasurement(noop, HOST)]] * 12)
    assert not d.passed and d.value == 0.0 and d.reason == "legacy_zero_param"
    d2 = Gate(GateConfig(min_epochs=1)).decide([[StepMeasurement(noop, HOST)]] * 12)
    assert d2.state == "not_applicable" and not d2.passed


def test_preset_settings_are_esper_lites():
    cfg = PRESETS["esper_lite_baseline"]
    assert (cfg.strategy, cfg.threshold, cfg.clamp, cfg.min_epochs, cfg.window) == \
        ("baseline", 0.10, 10.0, 10, "last")
    assert PRESETS["esper_lite_ema"].ema_decay == 0.9


def test_ema_starts_from_the_first_measured_epoch_not_zero():
    gate = Gate(GateConfig(ema_decay=0.9, min_epochs=1, threshold=0.3))
    d = gate.decide(epochs_of([[0.5], [0.1]]))
    assert d.passed and d.epoch == 1 and d.value == pytest.approx(0.5)
    # After epoch 2: 0.9 * 0.5 + 0.1 * 0.1 = 0.46 (an EMA started at 0 would be 0.0595).
    tracker = gate.tracker()
    tracker.observe_epoch(epochs_of([[0.05]])[0])
    d = tracker.observe_epoch(epochs_of([[1.0]])[0])
    assert d.value == pytest.approx(0.9 * 0.05 + 0.1 * 1.0)


@pytest.mark.parametrize("window,expected", [("last", 0.3), ("mean", 0.2), ("median", 0.2)])
def test_windows(window, expected):
    gate = Gate(GateConfig(window=window, min_epochs=1, threshold=100.0))
    d = gate.decide(epochs_of([[0.1, 0.2, 0.3]]))
    assert d.value == pytest.approx(expected)


def test_unmeasured_steps_are_skipped_by_the_window():
    zero_host = GradStats(0.0, 0.0, 10_000, 8, 8)
    steps = [StepMeasurement(seed_with_ratio(0.4), HOST),
             StepMeasurement(seed_with_ratio(0.9), zero_host)]
    d = Gate(GateConfig(window="last", min_epochs=1)).decide([steps])
    assert d.value == pytest.approx(0.4) and d.passed


def test_dead_seed_fails_with_its_own_reason():
    dead = GradStats(0.0, 0.0, 100, 2, 2)
    d = Gate(GateConfig(min_epochs=1, threshold=0.0)).decide([[StepMeasurement(dead, HOST)]])
    assert not d.passed
    assert [c.name for c in d.failed_checks] == ["alive"]
    assert "defect" in d.failed_checks[0].detail


def test_per_blueprint_thresholds_override():
    gate = Gate(GateConfig(threshold=0.5, thresholds={"norm": 0.05}, min_epochs=1))
    assert gate.decide(epochs_of([[0.1]]), blueprint="norm").passed
    assert not gate.decide(epochs_of([[0.1]]), blueprint="conv_heavy").passed


@settings(max_examples=40, deadline=None)
@given(data=st.data(), window=st.sampled_from(["last", "mean", "median"]),
       ema=st.sampled_from([None, 0.5, 0.9]), min_epochs=st.integers(0, 4),
       clamp=st.sampled_from([None, 1.0, 10.0]))
def test_batch_arrays_equal_online_tracker(data, window, ema, min_epochs, clamp):
    gate = Gate(GateConfig(window=window, ema_decay=ema, min_epochs=min_epochs, clamp=clamp,
                           threshold=0.8))
    n_seeds = data.draw(st.integers(1, 5))
    n_ep, k_max = 6, 5
    value = np.full((n_seeds, n_ep, k_max), np.nan)
    state = np.ones((n_seeds, n_ep, k_max), dtype=np.int8)
    reason = np.zeros((n_seeds, n_ep, k_max), dtype=np.int8)
    mask = np.zeros((n_seeds, n_ep, k_max), dtype=bool)
    online = []
    for s in range(n_seeds):
        tracker = gate.tracker("b")
        decision = None
        for e in range(n_ep):
            k = data.draw(st.integers(1, k_max))
            ratios = data.draw(st.lists(st.one_of(st.floats(0.0, 3.0), st.none()),
                                        min_size=k, max_size=k))
            steps = [StepMeasurement(seed_with_ratio(r), HOST) if r is not None
                     else StepMeasurement(GradStats(0.0, 0.0, 100, 2, 0), HOST)
                     for r in ratios]
            stat = gate.strategy.statistic_batch(*_batch(steps))
            value[s, e, :k], state[s, e, :k], reason[s, e, :k] = stat.value, stat.state, stat.reason
            mask[s, e, :k] = True
            if decision is None or not decision.passed:
                decision = tracker.observe_epoch(steps)
        online.append(decision)
    arrays = gate.decide_arrays(value, state, reason, mask, np.full(n_seeds, 0.8))
    for s in range(n_seeds):
        batch = gate.decision_record(arrays, s, "b")
        if online[s].passed:
            assert batch == online[s]
        else:
            assert not batch.passed
            last = n_ep - 1
            v = arrays.epoch_value[s, last]
            assert (online[s].value is None and math.isnan(v)) or online[s].value == v


def _batch(steps):
    from esper_ab.gate._tracker import _step_batch

    return _step_batch(steps, "b")


@pytest.mark.parametrize("cfg,match", [
    (GateConfig(threshold=-0.1), "-0.1"),
    (GateConfig(window="p90"), "p90"),
    (GateConfig(ema_decay=1.5), "1.5"),
    (GateConfig(min_epochs=-2), "-2"),
    (GateConfig(clamp=0), "clamp=0"),
    (GateConfig(strategy="exponent", strategy_params={"a": 9}), "exponent.a=9"),
    (GateConfig(thresholds={"norm": -1.0}), "-1.0"),
])
def test_bad_gate_settings_name_the_value(cfg, match):
    with pytest.raises(ConfigError, match=match):
        Gate(cfg)


def test_build_gate_from_yaml(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("gate:\n  strategy: exponent\n  strategy_params: {a: 0.25}\n"
                    "  threshold: 0.05\n  window: median\n  min_epochs: 3\n")
    gate = build_gate(str(path))
    assert gate.strategy.params["a"] == 0.25 and gate.config.window == "median"
    (tmp_path / "bad.yaml").write_text("gate:\n  stratgy: raw\n")
    with pytest.raises(ConfigError, match="stratgy"):
        build_gate(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="nope.yaml"):
        build_gate(str(tmp_path / "nope.yaml"))
