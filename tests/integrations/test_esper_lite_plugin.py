"""The plug-in without esper-lite: plain torch modules shaped like esper-lite's model, slot,
QualityGates and GateResult (written from esper-lite's source at commit 2016337e)."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from esper_ab.gate import PRESETS, Gate, GateConfig, build_gate
from esper_ab.gradients import GradStats, measure_groups
from esper_ab.integrations.esper_lite import (
    EsperLiteG2,
    Float64Collector,
    kasmina_param_lists,
    simic_param_lists,
    typed,
)
from esper_ab.strategies import StatsBatch, get_strategy


@dataclass
class FakeGateResult:          # esper.leyline.schemas.GateResult
    gate: int
    passed: bool
    score: float = 0.0
    checks_passed: list[str] = field(default_factory=list)
    checks_failed: list[str] = field(default_factory=list)
    message: str = ""


class FakeQualityGates:        # esper.kasmina.slot.QualityGates, strict mode, G2 only
    def __init__(self):
        self.min_blending_epochs = 10
        self.min_seed_gradient_ratio = 0.10

    def check_gate(self, state, target_stage):
        return self._check_g2(state)

    def _check_g2(self, state):
        ok, bad = ["global_improvement_1.00%"], []
        (ok if state.metrics.epochs_in_current_stage >= 10 else bad).append(
            "seed_ready" if state.metrics.epochs_in_current_stage >= 10 else "seed_not_ready")
        r = state.metrics.seed_gradient_norm_ratio
        if r is None:
            bad.append("gradient_stats_never_measured")
        elif r >= self.min_seed_gradient_ratio:
            ok.append(f"seed_gradient_active_{r:.2f}")
        else:
            bad.append(f"seed_gradient_low_{r:.2f}")
        return FakeGateResult(2, not bad, 0.2, ok, bad, "Improvement: 1.00%")


class FakeSlot(nn.Module):     # SeedSlot: seed module, state, gates, Kasmina's ratio capture
    def __init__(self, slot_id, seed, blueprint, host):
        super().__init__()
        self.seed = seed
        self._host = [host]
        self.gates = FakeQualityGates()
        self.state = SimpleNamespace(
            seed_id=f"seed_{slot_id}", slot_id=slot_id, blueprint_id=blueprint,
            stage=SimpleNamespace(name="TRAINING"),
            metrics=SimpleNamespace(epochs_in_current_stage=0, seed_gradient_norm_ratio=None))

    def capture_gradient_telemetry(self):
        host = [p for p in self._host[0].parameters() if p.requires_grad]
        seed = [p for p in self.seed.parameters() if p.requires_grad]
        hn = torch.stack([p.grad.norm() for p in host]).pow(2).sum().item() ** 0.5
        sn = torch.stack([p.grad.norm() for p in seed]).pow(2).sum().item() ** 0.5
        raw = 0.0 if hn < 1e-8 else sn / hn
        n_h, n_s = sum(p.numel() for p in host), sum(p.numel() for p in seed)
        self.state.metrics.seed_gradient_norm_ratio = min(10.0, raw * math.sqrt(n_h / n_s))

    def step_epoch(self):
        pass


class Scale(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return self.k * x


def conv_seed(c, scale=1.0):
    """A seed; a small ``scale`` makes its gradients (and its ratio) small, like conv_small."""
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(2, c), nn.Conv2d(c, c, 1),
                         Scale(scale))


class FakeModel(nn.Module):    # MorphogeneticModel: host + seed_slots, STE incubation
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.host = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        self.seed_slots = nn.ModuleDict({
            "r0c0": FakeSlot("r0c0", conv_seed(8), "conv_light", self.host),
            "r0c1": FakeSlot("r0c1", conv_seed(8, 1e-3), "conv_small", self.host)})

    def forward(self, x):
        h = self.host[1](self.host[0](x))
        for slot in self.seed_slots.values():
            s = slot.seed(h.detach())
            h = h + (s - s.detach())
        return self.host[2:](h)

    def get_host_parameters(self):
        ids = {id(p) for s in self.seed_slots.values() for p in s.parameters()}
        return (p for p in self.host.parameters() if id(p) not in ids)

    def get_seed_parameters(self, slot):
        return self.seed_slots[slot].seed.parameters()


def train(model, epochs, on_epoch, batches=3):
    """The heuristic loop's order: backward, capture, step; record_accuracy; step_epoch; G2."""
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(1, epochs + 1):
        for _ in range(batches):
            x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            for slot in model.seed_slots.values():
                slot.capture_gradient_telemetry()
            opt.step()
        for slot in model.seed_slots.values():
            slot.state.metrics.epochs_in_current_stage += 1       # record_accuracy
            slot.step_epoch()
        on_epoch(epoch)


def test_installed_gate_replaces_the_ratio_check_and_sees_the_same_ratio():
    model = FakeModel()
    plugin = EsperLiteG2(Gate.from_preset("esper_lite_kasmina"))
    plugin.install(model)
    plugin.install(model)              # idempotent
    seen = []

    def on_epoch(epoch):
        for slot_id, slot in model.seed_slots.items():
            res = slot.gates.check_gate(slot.state, "BLENDING")
            own = FakeQualityGates()._check_g2(slot.state)       # esper-lite's own verdict
            d = plugin.feeds[slot_id].tracker.now()
            r = slot.state.metrics.seed_gradient_norm_ratio
            assert d.value == pytest.approx(r, rel=1e-5, abs=1e-12)
            assert isinstance(res, FakeGateResult) and res.passed == own.passed
            assert not any(c.startswith("seed_gradient_") for c in
                           res.checks_passed + res.checks_failed)
            assert "seed_ready" in res.checks_passed or "seed_not_ready" in res.checks_failed
            seen.append((epoch, slot_id, res.passed, res.checks_failed))

    train(model, 11, on_epoch)
    assert (10, "r0c0", True, []) in seen
    small = [s for s in seen if s[1] == "r0c1" and s[0] == 11][0]
    assert not small[2] and small[3][0].startswith("esper_ab_g2_threshold_failed_0.00")
    assert plugin.feeds["r0c0"].epochs == 11


def test_model_level_hooks_and_the_parameter_lists_of_both_paths():
    model = FakeModel()
    host_k, seed_k = kasmina_param_lists(model, "r0c0")
    host_s, seed_s = simic_param_lists(model, "r0c0")
    assert [id(p) for p in host_k] == [id(p) for p in host_s] == [id(p) for p in
                                                                   model.host.parameters()]
    assert [id(p) for p in seed_k] == [id(p) for p in model.seed_slots["r0c0"].seed.parameters()]
    plugin = EsperLiteG2("esper_lite_kasmina", others="drop")
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    for _ in range(10):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        plugin.step(model)
        for slot in model.seed_slots.values():
            slot.state.metrics.epochs_in_current_stage += 1
        plugin.epoch(model)
    ref = measure_groups({"host": model.host, "seed": model.seed_slots["r0c0"].seed})
    d = plugin.feeds["r0c0"].decision()
    assert d.epochs_observed == 10
    assert d.value == pytest.approx(get_strategy("baseline").statistic(ref["seed"], ref["host"]).value)
    gates = plugin.quality_gates(FakeQualityGates(), model)
    res = gates.check_gate(model.seed_slots["r0c0"].state, "BLENDING")
    assert res.passed and res.checks_failed == [] and res.checks_passed[0].startswith(
        "esper_ab_g2_pass_")          # others='drop': the esper-ab decision alone


def test_an_untracked_seed_fails_closed():
    plugin = EsperLiteG2("esper_lite_kasmina")
    gates = plugin.quality_gates(FakeQualityGates())
    state = SimpleNamespace(seed_id="s", slot_id="r0c0", stage=SimpleNamespace(name="TRAINING"),
                            metrics=SimpleNamespace(epochs_in_current_stage=12,
                                                    seed_gradient_norm_ratio=5.0))
    res = gates._check_g2(state)
    assert not res.passed and "esper_ab_seed_not_tracked" in res.checks_failed
    assert "seed_ready" in res.checks_passed


def ratio_stats(r: float) -> tuple[GradStats, GradStats]:
    host = GradStats(sum_sq=4.0, sum_abs=10.0, numel=400, n_tensors=4, n_with_grad=4)
    return GradStats(sum_sq=r * r * 4.0 / 400 * 25, sum_abs=1.0, numel=25, n_tensors=2,
                     n_with_grad=2), host


def test_now_judges_the_latest_epoch_while_current_keeps_the_first_pass():
    tracker = Gate.from_preset("esper_lite_kasmina").tracker("norm")
    for epoch in range(1, 15):
        tracker.observe_step(*ratio_stats(0.5 if epoch <= 11 else 0.02))
        tracker.end_epoch()
        now = tracker.now()
        assert now.passed == (10 <= epoch <= 11)
        assert now.epochs_observed == epoch
    assert tracker.current().passed and tracker.current().epoch == 10
    failed = tracker.now().failed_checks
    assert [c.name for c in failed] == ["threshold"]
    assert tracker.now().value == pytest.approx(0.02)


def test_float64_collector_is_simics_measurement():
    torch.manual_seed(3)
    host = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 4))
    seed = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Linear(4, 4))
    for p in list(host.parameters()) + list(seed.parameters()):
        p.grad = torch.randn_like(p) * 1e-3
    host[2].bias.grad = None            # a tensor without a gradient is neither measured nor
    seed[1].weight.grad = None          # counted on the Simic path
    got = Float64Collector({"host": typed(host.parameters(), host),
                            "seed": typed(seed.parameters(), seed)})
    stats = got.materialize([got.collect()])[0]
    for name, mod in (("host", host), ("seed", seed)):
        grads = [p.grad.double().numpy() for p in mod.parameters() if p.grad is not None]
        s = stats[name]
        assert s.sum_sq == pytest.approx(sum(float((g * g).sum()) for g in grads), rel=1e-12)
        assert s.sum_abs == pytest.approx(sum(float(np.abs(g).sum()) for g in grads), rel=1e-12)
        assert s.numel == sum(g.size for g in grads) and s.n_tensors == len(grads)
    assert stats["host"].type_stats("norm").numel == 8
    # Simic's DualGradientStats.normalized_ratio, written from its source
    h, s = stats["host"], stats["seed"]
    simic = (math.sqrt(s.sum_sq) / math.sqrt(s.numel)) / (math.sqrt(h.sum_sq) / math.sqrt(h.numel)
                                                           + 1e-8)
    ours = get_strategy("baseline", legacy_edge_cases=True).statistic_batch(
        StatsBatch.from_stats([s]), StatsBatch.from_stats([h]), None).value[0]
    # the baseline strategy has no 1e-8 on the host RMS: a relative 1e-8 / RMS_H apart
    assert ours == pytest.approx(simic, rel=2e-8 / (math.sqrt(h.sum_sq / h.numel)))


def test_simic_ema_restarts_from_the_first_ratio_once_its_slot_was_empty_at_an_epoch_end():
    plugin = EsperLiteG2("esper_lite_simic", path="simic")
    lin = nn.Linear(2, 2)
    feeds = [plugin.start_seed("r0c0", "s0", "norm", host_params=lin.parameters(),
                               seed_params=[])]
    plugin.slot_emptied("r0c0")        # s0 pruned: the slot was empty at an epoch's end
    feeds.append(plugin.start_seed("r0c0", "s1", "norm", host_params=[], seed_params=[]))
    feeds.append(plugin.start_seed("r0c1", "s2", "norm", host_params=[], seed_params=[]))
    plugin.slot_emptied("r0c2")        # empty at epoch 1's end, germinated later
    feeds.append(plugin.start_seed("r0c2", "s3", "norm", host_params=[], seed_params=[]))
    plugin.start_episode()             # reset: 0.0 everywhere again
    feeds.append(plugin.start_seed("r0c0", "s4", "norm", host_params=[], seed_params=[]))
    assert [f.tracker.gate.config.ema_start for f in feeds] == [0.0, None, 0.0, None, 0.0]
    for f in feeds:
        f.tracker.observe_step(*ratio_stats(2.0))
        f.tracker.end_epoch()
    assert [f.tracker.now().value for f in feeds] == pytest.approx([0.2, 2.0, 0.2, 2.0, 0.2])


def test_a_gate_file_is_accepted_and_bad_arguments_are_refused(tmp_path):
    import yaml

    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({"gate": {"strategy": "mean_abs", "threshold": 0.2}}))
    plugin = EsperLiteG2(path)
    assert plugin.gate.config.strategy == "mean_abs" and plugin.gate.threshold == 0.2
    with pytest.raises(Exception, match="path"):
        EsperLiteG2("esper_lite_kasmina", path="ppo")
    with pytest.raises(Exception, match="others"):
        EsperLiteG2("esper_lite_kasmina", others="some")
    with pytest.raises(Exception, match="seed_slots"):
        plugin.install(object())


def test_importing_esper_ab_never_imports_esper_lite():
    code = ("import sys, esper_ab, esper_ab.integrations.esper_lite, esper_ab.cli; "
            "bad = [m for m in sys.modules if m == 'esper' or m.startswith('esper.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_gate_of_the_presets():
    assert build_gate("esper_lite_kasmina").config == PRESETS["esper_lite_baseline"]
    assert isinstance(build_gate("esper_lite_simic").config, GateConfig)
