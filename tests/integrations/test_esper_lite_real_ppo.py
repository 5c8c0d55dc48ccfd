"""The Simic / PPO path inside real esper-lite (marker ``esper_lite``).

A whole ``train_ppo_vectorized`` run is too slow for a test on CPU, so this drives esper-lite's
own Simic pieces in the order ``vectorized_trainer.py`` calls them, through the hooks of
``install_ppo_hooks``: real ``MorphogeneticModel``s (two environments sharing one plug-in), a
real ``ParallelEnvState.reset_episode_state``, esper-lite's
``batch_ops._collect_gradient_telemetry_for_batch`` on the batches with
``batch_step % stride == 0``, ``materialize_dual_grad_stats(...).normalized_ratio``, then the
trainer's EMA lines (copied from ``vectorized_trainer.py:1882-1890``) and the action step's
EMA drop (``action_execution.py:1469-1472``), and esper-lite's own strict G2.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from esper_ab.integrations.esper_lite import EsperLiteG2, install_ppo_hooks

pytestmark = pytest.mark.esper_lite
batch_ops = pytest.importorskip("esper.simic.training.batch_ops",
                                reason="esper-lite is not importable (put its src/ on PYTHONPATH)")
pes = pytest.importorskip("esper.simic.training.parallel_env_state")
gc_mod = pytest.importorskip("esper.simic.telemetry.gradient_collector")
host_mod = pytest.importorskip("esper.kasmina.host")
leyline = pytest.importorskip("esper.leyline")
tamiyo = pytest.importorskip("esper.tamiyo")

SLOTS = ["r0c0", "r0c1"]


def _env(i):
    model = host_mod.MorphogeneticModel(host_mod.CNNHost(base_channels=8), device="cpu",
                                        slots=SLOTS, permissive_gates=False)
    opt = torch.optim.SGD(model.get_host_parameters(), lr=0.01)
    env = pes.ParallelEnvState(model=model, host_optimizer=opt,
                               signal_tracker=tamiyo.SignalTracker(),
                               governor=SimpleNamespace(reset=lambda: None))
    env.reset_episode_state(SLOTS)          # hooked: installs the plug-in, starts the episode
    return env


def _germinate(env, slot_id, blueprint, seed_id):
    env.model.germinate_seed(blueprint, seed_id, slot=slot_id)
    slot = env.model.seed_slots[slot_id]
    assert slot.advance_stage(leyline.SeedStage.TRAINING).passed
    env.seed_optimizers[slot_id] = torch.optim.SGD(env.model.get_seed_parameters(slot_id),
                                                   lr=0.01)


@pytest.mark.parametrize("stride", [1, 3, 10])
def test_simic_path_matches_esper_lites_ema_and_g2_at_its_stride(stride):
    torch.manual_seed(0)
    plugin = EsperLiteG2("esper_lite_simic", path="simic")
    with install_ppo_hooks(plugin):
        envs = [_env(i) for i in range(2)]
        # env 0: r0c0 from the start (EMA from 0.0), r0c1 germinated at epoch 3 after two
        # epoch ends with the slot empty (EMA dropped: starts from its first ratio);
        # env 1: the blueprints swapped, same seed ids.
        for i, env in enumerate(envs):
            _germinate(env, "r0c0", ("conv_light", "conv_small")[i], "seed_0")
        g = torch.Generator().manual_seed(1)
        checked = starts = 0
        for epoch in range(1, 15):
            if epoch == 3:
                for i, env in enumerate(envs):
                    _germinate(env, "r0c1", ("conv_small", "conv_light")[i], "seed_1")
            stats = [None] * len(envs)
            for batch_step in range(4):
                x = torch.randn(8, 3, 32, 32, generator=g)
                y = torch.randint(0, 10, (8,), generator=g)
                for i, env in enumerate(envs):
                    env.host_optimizer.zero_grad(set_to_none=True)
                    for o in env.seed_optimizers.values():
                        o.zero_grad(set_to_none=True)
                    nn.functional.cross_entropy(env.model(x), y).backward()
                    if batch_step % stride == 0:
                        active = [s for s in SLOTS if env.model.has_active_seed_in_slot(s)]
                        got = batch_ops._collect_gradient_telemetry_for_batch(
                            env.model, active, "cpu")
                        if got is not None:
                            stats[i] = got
                    env.host_optimizer.step()
                    for o in env.seed_optimizers.values():
                        o.step()
            for i, env in enumerate(envs):
                model = env.model
                for s in SLOTS:
                    if model.seed_slots[s].state is not None:
                        model.seed_slots[s].state.metrics.record_accuracy(20.0 + epoch)
                for slot_id, async_stats in (stats[i] or {}).items():   # vectorized_trainer
                    state = model.seed_slots[slot_id].state
                    current = gc_mod.materialize_dual_grad_stats(async_stats).normalized_ratio
                    prev = env.gradient_ratio_ema.get(slot_id)
                    ema = current if prev is None else 0.9 * prev + 0.1 * current
                    env.gradient_ratio_ema[slot_id] = ema
                    state.metrics.seed_gradient_norm_ratio = ema
                    starts += prev is None
                for slot_id in SLOTS:
                    slot = model.seed_slots[slot_id]
                    if slot.state is None:
                        continue
                    native = type(slot.gates).__mro__[1]._check_g2(slot.gates, slot.state)
                    ours = slot.gates._check_g2(slot.state)
                    assert ours.passed == native.passed, (epoch, slot_id)
                    assert "esper_ab_seed_not_tracked" not in ours.checks_failed
                    d = plugin.feeds_of(model)[slot_id].decision()
                    assert d.value == pytest.approx(slot.state.metrics.seed_gradient_norm_ratio,
                                                    rel=1e-6, abs=1e-9)
                    checked += 1
                for slot_id in SLOTS:                                    # action_execution
                    model.seed_slots[slot_id].step_epoch()
                    if not model.has_active_seed_in_slot(slot_id):
                        env.gradient_ratio_ema.pop(slot_id, None)
        assert checked == 2 * (14 + 12) and starts == 2        # r0c1's EMA restarted
        for env in envs:
            feeds = plugin.feeds_of(env.model)
            assert feeds["r0c0"].tracker.gate.config.ema_start == 0.0
            assert feeds["r0c1"].tracker.gate.config.ema_start is None
    assert not hasattr(batch_ops._collect_gradient_telemetry_for_batch, "esper_ab_plugin")


def test_ppo_hooks_refuse_a_second_install_and_restore_esper_lite():
    original = batch_ops._collect_gradient_telemetry_for_batch
    with install_ppo_hooks(EsperLiteG2("esper_lite_simic", path="simic")):
        with pytest.raises(Exception, match="installed already"):
            install_ppo_hooks(EsperLiteG2("esper_lite_simic", path="simic"))
    assert batch_ops._collect_gradient_telemetry_for_batch is original
