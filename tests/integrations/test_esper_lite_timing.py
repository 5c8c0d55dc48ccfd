"""The plug-in's timing, models and smoothing without esper-lite (issue 23): esper-lite's
measurement stride, several models behind one plug-in, Simic's EMA restart, permissive gates,
the one gate loader. The fakes are those of test_esper_lite_plugin (esper-lite's shapes)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_esper_lite_plugin import FakeModel, FakeQualityGates, conv_seed
from torch import nn

import esper_ab
from esper_ab.errors import ConfigError
from esper_ab.gate import PRESETS, Gate
from esper_ab.gradients import measure_groups
from esper_ab.integrations.esper_lite import (
    GATE_CHECK,
    EsperLiteG2,
    PermissiveGatesWarning,
    install_ppo_hooks,
)
from esper_ab.strategies import get_strategy


def train(models, epochs, stride, on_epoch, batches=3):
    """run_heuristic_episode's order at ``gradient_telemetry_stride``: capture only in epochs
    ``epoch % stride == 0``; record_accuracy; step_epoch; then G2."""
    g = torch.Generator().manual_seed(1)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
    for epoch in range(1, epochs + 1):
        for _ in range(batches):
            x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
            for model, opt in zip(models, opts, strict=True):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                if epoch % stride == 0:
                    for slot in model.seed_slots.values():
                        if slot.seed is not None:
                            slot.capture_gradient_telemetry()
                opt.step()
        for model in models:
            for slot in model.seed_slots.values():
                if slot.state is not None:
                    slot.state.metrics.epochs_in_current_stage += 1     # record_accuracy
                slot.step_epoch()
        on_epoch(epoch)


class EmptyableModel(FakeModel):
    """FakeModel whose slots may be empty (seed None), as esper-lite's may."""

    def forward(self, x):
        h = self.host[1](self.host[0](x))
        for slot in self.seed_slots.values():
            if slot.seed is not None:
                s = slot.seed(h.detach())
                h = h + (s - s.detach())
        return self.host[2:](h)


def swapped_model():
    """A model whose r0c0 seed has small gradients and r0c1 large ones (FakeModel's reverse),
    with the same slot and seed ids."""
    model = FakeModel()
    model.seed_slots["r0c0"].seed[3].k, model.seed_slots["r0c1"].seed[3].k = 1e-3, 1.0
    return model


@pytest.mark.parametrize("stride", [1, 3, 10])
def test_at_esper_lites_stride_g2_judges_the_last_measured_ratio(stride):
    model = FakeModel()
    plugin = EsperLiteG2("esper_lite_kasmina")
    plugin.install(model)
    agree, passes = [], 0

    def on_epoch(epoch):
        nonlocal passes
        for slot in model.seed_slots.values():
            res = slot.gates.check_gate(slot.state, "BLENDING")
            own = FakeQualityGates()._check_g2(slot.state)     # last measured ratio, kept
            agree.append(res.passed == own.passed)
            passes += res.passed
            r = slot.state.metrics.seed_gradient_norm_ratio
            feed = plugin.feeds[slot.state.slot_id]
            if r is not None:
                assert feed.decision().value == pytest.approx(r, rel=1e-5, abs=1e-12)

    train([model], 21, stride, on_epoch)
    assert all(agree) and len(agree) == 42
    assert passes == 12                # r0c0 passes from epoch 10 to 21, r0c1 never


def test_an_unmeasured_epoch_is_judged_by_the_last_measured_one():
    from test_esper_lite_plugin import ratio_stats

    tracker = Gate.from_preset("esper_lite_kasmina").tracker("norm")
    for epoch in range(1, 13):
        if epoch in (3, 10):
            tracker.observe_step(*ratio_stats(0.5 if epoch == 3 else 0.02))
        tracker.end_epoch()
        now = tracker.now()
        assert now.epochs_observed == epoch
        assert now.value == (None if epoch < 3 else pytest.approx(0.5 if epoch < 10 else 0.02))
        assert not now.passed                         # min_epochs until 9, then 0.02 < 0.1
    tracker = Gate.from_preset("esper_lite_kasmina").tracker("norm")
    tracker.observe_step(*ratio_stats(0.5))
    for _ in range(10):
        tracker.end_epoch()
    assert tracker.now().passed and tracker.now().value == pytest.approx(0.5)


def test_several_models_share_one_plugin_without_crosstalk():
    a, b = FakeModel(), swapped_model()
    plugin = EsperLiteG2("esper_lite_kasmina")
    for m in (a, b):
        plugin.install(m)
    seen = []

    def on_epoch(epoch):
        for model in (a, b):
            for slot_id, slot in model.seed_slots.items():
                res = slot.gates.check_gate(slot.state, "BLENDING")
                own = FakeQualityGates()._check_g2(slot.state)
                assert res.passed == own.passed
                assert "esper_ab_seed_not_tracked" not in res.checks_failed
                d = plugin.feeds_of(model)[slot_id].decision()
                assert d.value == pytest.approx(slot.state.metrics.seed_gradient_norm_ratio,
                                                rel=1e-5, abs=1e-12)
                seen.append((model is a, slot_id, res.passed))

    train([a, b], 11, 1, on_epoch)
    assert (True, "r0c0", True) in seen and (False, "r0c1", True) in seen
    assert not any(p for is_a, s, p in seen if (is_a and s == "r0c1") or (not is_a and s == "r0c0"))
    assert plugin.feeds_of(a)["r0c0"] is not plugin.feeds_of(b)["r0c0"]
    with pytest.raises(ConfigError, match="feeds_of"):
        plugin.feeds  # noqa: B018 - two models: which one's feeds is ambiguous
    with pytest.raises(ConfigError, match="another EsperLiteG2"):
        EsperLiteG2("esper_lite_kasmina").install(a)


def _raw_ratio(model, slot_id):
    """Simic's raw normalized ratio of the last batch, from esper-ab's measurement."""
    ref = measure_groups({"host": model.host, "seed": model.seed_slots[slot_id].seed})
    return get_strategy("baseline", legacy_edge_cases=True).statistic(ref["seed"],
                                                                      ref["host"]).value


def test_simic_ema_restarts_where_esper_lite_drops_it():
    """esper-lite: EMA 0.0 at the reset; a slot empty at an epoch's end drops its EMA, and the
    next seed there starts from its first ratio (vectorized_trainer: prev_ema None)."""
    model = EmptyableModel()
    late = model.seed_slots["r0c1"]
    saved_seed, saved_state = late.seed, late.state
    late.seed, late.state = None, None              # r0c1 empty through epoch 1
    plugin = EsperLiteG2("esper_lite_simic", path="simic")
    plugin.install(model)
    plugin.start_episode(model)
    raws: dict[str, list[float]] = {"r0c0": [], "r0c1": []}

    def on_epoch(epoch):
        for slot_id in raws:
            if model.seed_slots[slot_id].seed is not None:
                raws[slot_id].append(_raw_ratio(model, slot_id))
        if epoch == 1:
            late.seed, late.state = saved_seed, saved_state       # germinated in epoch 2
            return
        for slot_id, start in (("r0c0", 0.0), ("r0c1", None)):
            ema = start
            for r in raws[slot_id]:
                ema = r if ema is None else 0.9 * ema + 0.1 * r
            d = plugin.feeds_of(model)[slot_id].decision(
                model.seed_slots[slot_id].state.metrics.epochs_in_current_stage)
            assert d.value == pytest.approx(ema, rel=1e-6)

    train([model], 4, 1, on_epoch)
    feeds = plugin.feeds_of(model)
    assert feeds["r0c0"].tracker.gate.config.ema_start == 0.0
    assert feeds["r0c1"].tracker.gate.config.ema_start is None
    plugin.start_episode(model)
    assert plugin.feeds_of(model) == {}


def test_permissive_gates_warn_once_naming_the_fix():
    perm = [FakeModel(), FakeModel()]
    for m in perm:
        for slot in m.seed_slots.values():
            slot.gates.permissive = True
    plugin = EsperLiteG2("esper_lite_kasmina")
    with pytest.warns(PermissiveGatesWarning, match="permissive_gates=False") as caught:
        for m in perm:
            plugin.install(m)
    assert len([w for w in caught if w.category is PermissiveGatesWarning]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EsperLiteG2("esper_lite_kasmina").install(FakeModel())    # strict: silent


def test_the_decision_names_the_gate_and_its_value():
    model = FakeModel()
    plugin = EsperLiteG2("esper_lite_kasmina")
    plugin.install(model)
    results = []
    train([model], 10, 1, lambda e: results.extend(
        s.gates.check_gate(s.state, "BLENDING") for s in model.seed_slots.values()))
    last = results[-2:]
    assert all(GATE_CHECK + "esper_lite_kasmina" in r.checks_passed for r in last)
    ratio = model.seed_slots["r0c0"].state.metrics.seed_gradient_norm_ratio
    value = float(next(c for c in last[0].checks_passed
                       if c.startswith("esper_ab_g2_pass_")).rsplit("_", 1)[1])
    assert value == pytest.approx(ratio, rel=1e-5)
    assert EsperLiteG2(Gate.from_preset("esper_lite_simic")).name == "baseline"  # its strategy
    assert EsperLiteG2("esper_lite_simic", name="simic-2").name == "simic-2"
    with pytest.raises(ConfigError, match="name"):
        EsperLiteG2("esper_lite_simic", name="a b")


def test_load_gate_takes_a_preset_a_plain_gate_file_and_a_winner_file(tmp_path):
    assert esper_ab.load_gate("esper_lite_kasmina").config == PRESETS["esper_lite_kasmina"]
    plain = tmp_path / "gate.yaml"
    plain.write_text(yaml.safe_dump({"gate": {"strategy": "mean_abs", "threshold": 0.2}}))
    assert esper_ab.load_gate(plain).config.strategy == "mean_abs"
    assert EsperLiteG2(plain).name == "gate"
    with pytest.raises(ConfigError, match="preset"):
        esper_ab.load_gate(tmp_path / "missing.yaml")


def test_ppo_hooks_refuse_in_one_line_without_esper_lite_or_on_the_kasmina_path():
    with pytest.raises(ConfigError, match="path='simic'"):
        install_ppo_hooks(EsperLiteG2("esper_lite_kasmina"))
    try:
        import esper.simic.training.batch_ops  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="not importable.*PYTHONPATH"):
            install_ppo_hooks(EsperLiteG2("esper_lite_simic", path="simic"))


def test_an_explicit_hook_user_keeps_a_single_table():
    plugin = EsperLiteG2("esper_lite_kasmina")
    lin = conv_seed(2)
    feed = plugin.start_seed("r0c0", "s", "norm", host_params=lin.parameters(),
                             seed_params=lin.parameters())
    assert plugin.feeds == {"r0c0": feed}
    state = SimpleNamespace(slot_id="r0c0", seed_id="s")
    assert plugin.feed_for(state) is feed and plugin.feed_for(state, nn.Linear(1, 1)) is None
