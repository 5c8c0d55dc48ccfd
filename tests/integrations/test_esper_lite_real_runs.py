"""The plug-in inside real esper-lite runs (marker ``esper_lite``; skipped when esper-lite is
not importable): esper-lite's own ``run_heuristic_episode`` at strides 1, 3 and 10, several
real models behind one plug-in, and a folder of native + plug-in telemetry ingested and
analyzed side by side. Run it as README journey 6 says::

    PYTHONPATH=.:/path/to/esper-lite/src /path/to/esper-lite-venv/bin/python -m pytest \\
        -m esper_lite tests/integrations
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from esper_ab.cli import main
from esper_ab.integrations.esper_lite import EsperLiteG2, ingest_esper_lite

pytestmark = pytest.mark.esper_lite
pytest.importorskip("esper.simic.training.helpers", reason="esper-lite is not importable "
                    "(put its src/ on PYTHONPATH to run these tests)")
host_mod = pytest.importorskip("esper.kasmina.host")
leyline = pytest.importorskip("esper.leyline")

_AB = Path(__file__).resolve().parents[2] / "benchmarks" / "esper_lite_ab.py"
_spec = importlib.util.spec_from_file_location("esper_lite_ab", _AB)
ab = importlib.util.module_from_spec(_spec)
sys.modules["esper_lite_ab"] = ab          # dataclasses look their module up
_spec.loader.exec_module(ab)

EPOCHS, BATCHES = 22, 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Episode 0 natively at stride 10, and with the esper_lite_kasmina plug-in at strides 1,
    3 and 10, each writing Nissa telemetry; the plug-in's verdict beside esper-lite's."""
    root = tmp_path_factory.mktemp("esper_lite_runs")
    out = {"root": root,
           "native": ab.run_episode(0, stride=10, epochs=EPOCHS, batches=BATCHES,
                                    telemetry=root / "native")}
    for stride in (1, 3, 10):
        plugin = EsperLiteG2("esper_lite_kasmina")
        amended = []
        check = plugin.check_g2

        def recorded(state, result, model=None, check=check, amended=amended, plugin=plugin):
            res = check(state, result, model)
            feed = plugin.feed_for(state, model)
            amended.append((res.passed, feed.decision().value if feed else None))
            return res

        plugin.check_g2 = recorded
        ep = ab.run_episode(0, plugin=plugin, stride=stride, epochs=EPOCHS, batches=BATCHES,
                            telemetry=root / f"plugin_s{stride}" if stride == 10 else None)
        for c, (passed, value) in zip(ep.checks, amended, strict=True):
            c["passed"], c["value"] = passed, value
        out[stride] = ep
    return out


@pytest.mark.parametrize("stride", [1, 3, 10])
def test_the_kasmina_preset_makes_esper_lites_g2_decisions_at_its_stride(runs, stride):
    checks = runs[stride].checks
    assert len(checks) >= 10
    assert all(c["passed"] == c["native_passed"] for c in checks)
    measured = [c for c in checks if c["native_ratio"] is not None]
    assert measured and all(c["value"] == pytest.approx(c["native_ratio"], rel=1e-5, abs=1e-9)
                            for c in measured)
    assert any(c["passed"] for c in checks)
    assert all(isinstance(c["epoch"], int) for c in checks)
    if stride > 1:   # G2 after an epoch esper-lite did not measure: the last measured ratio
        assert any(c["epoch"] % stride for c in measured)
    if stride == 10:  # the plug-in run is the native run, check by check
        assert [(c["slot"], c["epochs"], c["native_passed"]) for c in checks] == \
               [(c["slot"], c["epochs"], c["native_passed"]) for c in runs["native"].checks]


def test_a_mixed_native_and_plugin_folder_is_ingested_and_analyzed_side_by_side(runs, capsys):
    root = runs["root"]
    table = ingest_esper_lite(root).table
    by = {s: t for s, t in table.groupby("strategy")}
    assert set(by) == {"esper_lite_strict", "esper_ab:esper_lite_kasmina"}
    nat, gate = (by[k].set_index(["slot", "seed"]).sort_index() for k in
                 ("esper_lite_strict", "esper_ab:esper_lite_kasmina"))
    assert list(nat["passed"]) == list(gate["passed"]) and nat["passed"].any()
    assert list(nat["blueprint"]) == list(gate["blueprint"])
    judged = gate["g2_attempts"] > 0
    assert gate.loc[judged, "statistic"].notna().all()
    # esper-lite writes two decimals, the plug-in nine significant digits of the same ratio
    both = judged & nat["statistic"].notna()
    assert ((gate.loc[both, "statistic"] - nat.loc[both, "statistic"]).abs() <= 0.005 + 1e-9).all()
    out = root.parent / "decisions.csv"
    assert main(["ingest", "esper-lite", str(root), "--out", str(out)]) == 0
    assert main(["analyze", str(out), "--observational"]) == 0
    report = capsys.readouterr().out
    assert "== esper_lite_strict:" in report and "== esper_ab:esper_lite_kasmina:" in report


def _models(n):
    torch.manual_seed(0)
    models = []
    for i in range(n):
        m = host_mod.MorphogeneticModel(host_mod.CNNHost(base_channels=8), device="cpu",
                                        slots=["r0c0", "r0c1"], permissive_gates=False)
        bps = ("conv_light", "conv_small") if i % 2 == 0 else ("conv_small", "conv_light")
        for slot_id, bp in zip(("r0c0", "r0c1"), bps, strict=True):
            m.germinate_seed(bp, "seed_0" if slot_id == "r0c0" else "seed_1", slot=slot_id)
            assert m.seed_slots[slot_id].advance_stage(leyline.SeedStage.TRAINING).passed
        models.append(m)
    return models


@pytest.mark.parametrize("stride", [1, 3])
def test_several_real_models_share_one_plugin_without_crosstalk(stride):
    """Three real models (as vectorized PPO has one per environment), same slot and seed ids,
    blueprints swapped between them; run_heuristic_episode's order at ``stride``."""
    models = _models(3)
    plugin = EsperLiteG2("esper_lite_kasmina")
    for m in models:
        plugin.install(m)
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in models]
    g = torch.Generator().manual_seed(1)
    verdicts = []
    for epoch in range(1, 12):
        measure = epoch % stride == 0
        for _ in range(2):
            x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
            for m, opt in zip(models, opts, strict=True):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(m(x), y).backward()
                if measure:
                    for slot in m.seed_slots.values():
                        slot.capture_gradient_telemetry_async()
                opt.step()
        for m in models:
            for slot_id, slot in m.seed_slots.items():
                if measure:
                    slot.finalize_gradient_telemetry()
                slot.state.metrics.record_accuracy(20.0 + epoch)
                slot.step_epoch()
                native = type(slot.gates).__mro__[1]._check_g2(slot.gates, slot.state)
                ours = slot.gates._check_g2(slot.state)
                assert ours.passed == native.passed
                assert "esper_ab_seed_not_tracked" not in ours.checks_failed
                r = slot.state.metrics.seed_gradient_norm_ratio
                d = plugin.feeds_of(m)[slot_id].decision()
                assert (d.value is None) == (r is None)
                if r is not None:
                    assert d.value == pytest.approx(r, rel=1e-5, abs=1e-9)
                verdicts.append((m.seed_slots[slot_id].state.blueprint_id, ours.passed))
    assert ("conv_light", True) in verdicts
