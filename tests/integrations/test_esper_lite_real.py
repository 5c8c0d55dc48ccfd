"""The plug-in inside real esper-lite (marker ``esper_lite``; skipped when it is not importable).

Run it against an esper-lite checkout (no install needed; its Kasmina needs only torch)::

    PYTHONPATH=/path/to/esper-lite/src .venv/bin/python -m pytest -m esper_lite tests/integrations
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper_ab.gate import build_gate
from esper_ab.integrations.esper_lite import EsperLiteG2

pytestmark = pytest.mark.esper_lite
host_mod = pytest.importorskip("esper.kasmina.host", reason="esper-lite is not importable "
                               "(put its src/ on PYTHONPATH to run these tests)")
leyline = pytest.importorskip("esper.leyline")


def _episode(plugin: EsperLiteG2, epochs: int):
    """run_heuristic_episode's order: backward, capture (async), step; finalize; record
    accuracy; step_epoch; then the policy's ADVANCE."""
    torch.manual_seed(0)
    model = host_mod.MorphogeneticModel(host_mod.CNNHost(base_channels=8), device="cpu",
                                        slots=["r0c0", "r0c1", "r0c2"], permissive_gates=False)
    plugin.install(model)
    model.germinate_seed("conv_light", "seed_0", slot="r0c0")
    model.germinate_seed("conv_small", "seed_1", slot="r0c1")
    live = ("r0c0", "r0c1")
    for slot_id in live:
        assert model.seed_slots[slot_id].advance_stage(leyline.SeedStage.TRAINING).passed
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    trace = []
    for epoch in range(1, epochs + 1):
        for _ in range(3):
            x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            for slot_id in live:
                model.seed_slots[slot_id].capture_gradient_telemetry_async()
            opt.step()
        for slot_id in live:
            slot = model.seed_slots[slot_id]
            slot.finalize_gradient_telemetry()
            slot.state.metrics.record_accuracy(20.0 + epoch)
            slot.step_epoch()
            ours = plugin.feeds[slot_id].decision(slot.state.metrics.epochs_in_current_stage)
            trace.append((epoch, slot_id, slot.state.metrics.seed_gradient_norm_ratio, ours))
    return model, trace


def test_real_slots_feed_the_tracker_with_esper_lites_own_ratio():
    plugin = EsperLiteG2(build_gate("esper_lite_kasmina"))
    model, trace = _episode(plugin, 11)
    for epoch, _, theirs, ours in trace:
        assert ours.epochs_observed == epoch
        assert ours.value == pytest.approx(theirs, rel=1e-5, abs=1e-9)
    for slot_id in ("r0c0", "r0c1"):
        slot = model.seed_slots[slot_id]
        ratio = slot.state.metrics.seed_gradient_norm_ratio
        result = slot.advance_stage(leyline.SeedStage.BLENDING)
        assert isinstance(result, leyline.GateResult)
        names = result.checks_passed + result.checks_failed
        assert not any(c.startswith("seed_gradient_") for c in names)
        assert any(c.startswith("esper_ab_g2_") for c in names)
        assert "seed_ready" in result.checks_passed
        assert result.passed == (ratio >= 0.10)        # same gate, same ratio, same answer
        assert (slot.state.stage == leyline.SeedStage.BLENDING) == result.passed
