"""Episodes: host bit-identity under incubation, the STE and first-order term against
independent computations, determinism, caching, the placebo A/A check, table contents,
gate decisions and the closed loop."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from esper_ab.episodes._incubation import IncubationSettings, SeedKey, incubate
from esper_ab.episodes._training import IncubationHook, pretrain_host
from esper_ab.episodes.blueprints import build_seed, list_blueprints, param_count_formula
from esper_ab.episodes.runner import (
    episode_config,
    gate_decisions,
    resolve_device,
    run_closed_loop,
    run_episode,
)
from esper_ab.episodes.workloads import build_workload, task_loss
from esper_ab.errors import ConfigError
from esper_ab.gate import Gate
from esper_ab.gradients import GradStats

torch.set_num_threads(1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("episode-cache")


@pytest.fixture(scope="module")
def tiny_cnn(cache):
    return run_episode(episode_config("synthetic-cnn", size="tiny"), replicate=0,
                       cache_dir=cache)


def _incubated(name: str, blueprints):
    config = episode_config(name, size="tiny")
    workload = build_workload(config.workload, seed=0)
    start, _ = pretrain_host(workload, replicate=0, device=CPU, cache_dir=None)
    settings = IncubationSettings(steps_per_epoch=3, epochs=2, batch_size=16, host_lr=1e-3,
                                  seed_lr=1e-2, weight_decay=1e-4, grad_clip=1.0)
    keys = [SeedKey(config.resolved_slots[0], bp) for bp in blueprints]
    return workload, incubate(workload, start, keys, settings, replicate=0, device=CPU)


@pytest.mark.parametrize("name", ["synthetic-cnn", "synthetic-seq"])
def test_host_stays_bit_identical_under_incubation(name):
    topology = "cnn" if name == "synthetic-cnn" else "transformer"
    workload, with_seeds = _incubated(name, list_blueprints(topology))
    _, seedless = _incubated(name, [])
    for key, value in seedless.host.host.items():
        assert torch.equal(value, with_seeds.host.host[key]), key
    host_a, host_b = workload.build_host(), workload.build_host()
    host_a.load_state_dict(with_seeds.host.host)
    host_b.load_state_dict(seedless.host.host)
    x = workload.test_x[:32]
    assert torch.equal(host_a.eval()(x), host_b.eval()(x))
    loss_a = [s.train_loss for s in with_seeds.steps]
    loss_b = [s.train_loss for s in seedless.steps]
    assert loss_a == loss_b
    # the host gradients the trace saw are the seedless ones too
    assert [s.host for s in with_seeds.steps] == [s.host for s in seedless.steps]


def _slot_setup(seed_name="conv_light"):
    torch.manual_seed(0)
    config = episode_config("synthetic-cnn", size="tiny")
    workload = build_workload(config.workload, seed=0)
    host = workload.build_host()
    slot = config.resolved_slots[0]
    seed = build_seed(seed_name, topology="cnn", width=host.slot_width(slot))
    return workload, host, slot, seed


def test_straight_through_gradient_equals_the_h_plus_s_minus_detached_s_formula():
    workload, host, slot, seed = _slot_setup()
    x, y = workload.train_x[:16], workload.train_y[:16]
    hook = IncubationHook({slot: [seed]})
    task_loss(host(x, hook), y).backward()
    ours = [p.grad.clone() for p in seed.parameters()]
    host_grads = [p.grad.clone() for p in host.parameters()]
    for p in list(seed.parameters()) + list(host.parameters()):
        p.grad = None

    def formula(name, h):
        if name != slot:
            return h
        s = seed(h.detach())
        return h + (s - s.detach())

    task_loss(host(x, formula), y).backward()
    for a, p in zip(ours, seed.parameters(), strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-5, atol=1e-8)
    for a, p in zip(host_grads, host.parameters(), strict=True):
        assert torch.equal(a, p.grad)


def test_first_order_term_is_minus_dloss_dalpha_at_zero():
    workload, host, slot, seed = _slot_setup("depthwise")
    x, y = workload.train_x[:16], workload.train_y[:16]
    hook = IncubationHook({slot: [seed]})
    task_loss(host(x, hook), y).backward()
    first_order, grad_norm, delta_norm = hook.first_order_terms(slot)[0].tolist()
    alpha = torch.zeros((), requires_grad=True)

    def blend(name, h):
        return h + alpha * (seed(h) - h) if name == slot else h

    (d_alpha,) = torch.autograd.grad(task_loss(host(x, blend), y), alpha)
    assert first_order == pytest.approx(-d_alpha.item(), rel=1e-4, abs=1e-9)
    assert grad_norm > 0 and delta_norm > 0


def test_same_replicate_gives_identical_tables(tiny_cnn):
    again = run_episode(tiny_cnn.config, replicate=0, cache_dir=None)
    pd.testing.assert_frame_equal(tiny_cnn.seeds, again.seeds)
    pd.testing.assert_frame_equal(tiny_cnn.trace, again.trace)


def test_second_call_loads_from_the_cache(tiny_cnn, cache):
    again = run_episode(tiny_cnn.config, replicate=0, cache_dir=cache)
    assert again.timings.loaded
    pd.testing.assert_frame_equal(tiny_cnn.seeds, again.seeds)
    assert list((cache / "hosts").glob("host-*.pt"))


def test_placebo_against_itself_is_zero_over_replicates(cache):
    config = episode_config("synthetic-cnn", size="tiny", blueprints=("noop",))
    values, noop = [], []
    for r in range(3):
        seeds = run_episode(config, replicate=r, cache_dir=cache).seeds.set_index("blueprint")
        values.append(seeds.loc["placebo", "value_acc_pp"])
        noop.append(seeds.loc["noop", "value_acc_pp"])
    assert values == [0.0, 0.0, 0.0]  # exact on the CPU: the forks are paired
    assert abs(np.mean(noop)) < 1.0  # another zero-effect seed: only rounding differs


def test_tables_have_the_documented_columns_and_consistent_numbers(tiny_cnn):
    seeds, trace, config = tiny_cnn.seeds, tiny_cnn.trace, tiny_cnn.config
    assert set(seeds["blueprint"]) == set(list_blueprints("cnn"))
    for row in seeds.itertuples(index=False):
        assert row.n_params == param_count_formula(row.blueprint, "cnn", row.slot_width)
        assert row.value_acc_pp == pytest.approx(
            100 * (row.heldout_acc - row.placebo_heldout_acc))
        assert row.value_loss == pytest.approx(row.placebo_heldout_loss - row.heldout_loss)
        assert row.valuable == (row.value_acc_pp >= config.margin_pp)
    counts = seeds.set_index("blueprint")
    assert counts.loc["conv_heavy", "n_params_conv"] == 18 * 16 * 16
    assert counts.loc["conv_heavy", "n_params_norm"] == 4 * 16
    assert counts.loc["attention", "n_params_linear"] == 144
    dead = seeds.set_index("blueprint")["dead_at_birth"]
    assert dead["conv_small"] == True and dead["placebo"] == True  # noqa: E712 (numpy bool)
    assert dead["conv_light"] == False and pd.isna(dead["noop"])  # noqa: E712
    n_steps = config.incubation_epochs * config.steps_per_epoch
    assert len(trace) == n_steps * len(seeds)
    assert sorted(trace["epoch"].unique()) == list(range(1, config.incubation_epochs + 1))
    row = trace.iloc[5]
    seed_stats, host_stats = GradStats.from_row(row, "seed_"), GradStats.from_row(row, "host_")
    assert host_stats.numel == 6220  # the whole host, no seed parameters
    ratio = math.sqrt(row["seed_sum_sq"] / row["seed_numel"]) / math.sqrt(
        row["host_sum_sq"] / row["host_numel"])
    assert row["rms_ratio"] == pytest.approx(ratio)
    assert seed_stats.rms_per_element / host_stats.rms_per_element == pytest.approx(ratio)
    assert {"first_order", "grad_out_norm", "delta_norm", "first_order_cosine"} <= set(trace)


def test_baseline_gate_shows_the_architecture_bias(tiny_cnn):
    decisions = gate_decisions(tiny_cnn, Gate.from_preset("esper_lite_baseline"))
    passed = decisions.set_index("blueprint")["passed"]
    assert "placebo" not in passed.index
    assert not passed["attention"] and not passed["conv_small"] and not passed["noop"]
    assert passed["bottleneck"] and passed["depthwise"]
    assert (decisions.loc[decisions["passed"], "pass_epoch"] >= 10).all()


def test_unknown_slots_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="block2.pre_pool"):
        episode_config("synthetic-cnn", size="tiny", slots=("block9.pre_pool",))
    with pytest.raises(ConfigError, match="lora8"):
        episode_config("synthetic-cnn", size="tiny", blueprints=("lora8",))
    with pytest.raises(ConfigError, match="EpisodeConfig"):
        episode_config("synthetic-cnn", size="tiny", horizon=3)


def test_cuda_request_without_cuda_falls_back_to_cpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_device("cuda").type == "cpu"
    assert any("CUDA is not available" in str(w.message) for w in caught)


def test_closed_loop_rejected_seeds_leave_the_control_host_unchanged(cache):
    config = episode_config("synthetic-cnn", size="tiny",
                            blueprints=("attention", "conv_small", "bottleneck"))
    loop = run_closed_loop(config, replicate=0, gate="esper_lite_baseline", cache_dir=cache)
    table = loop.table.set_index("blueprint")
    for bp in ("attention", "conv_small"):
        assert not table.loc[bp, "admitted"]
        assert table.loc[bp, "final_heldout_acc"] == table.loc[bp, "control_heldout_acc"]
    assert table.loc["bottleneck", "admitted"] and table.loc["bottleneck", "blend_epoch"] >= 10


def test_transformer_episode_runs_and_records_embedding_in_the_host(cache):
    res = run_episode(episode_config("synthetic-seq", size="tiny",
                                     blueprints=("attention", "lora8", "mlp")),
                      replicate=0, cache_dir=cache)
    assert set(res.seeds["blueprint"]) == {"attention", "lora8", "mlp", "placebo"}
    assert (res.trace["host_embedding_numel"] == (35 + 32) * 32).all()  # tokens + positions
    assert res.seeds.set_index("blueprint").loc["placebo", "value_acc_pp"] == 0.0


@pytest.mark.gpu
def test_cuda_episode_matches_the_cpu_structure(tmp_path):
    config = episode_config("synthetic-cnn", size="tiny")
    gpu = run_episode(config, replicate=0, cache_dir=tmp_path, device="cuda")
    cpu = run_episode(config, replicate=0, cache_dir=None)
    assert gpu.device == "cuda"
    assert list(gpu.seeds["seed_id"]) == list(cpu.seeds["seed_id"])
    assert gpu.trace.shape == cpu.trace.shape
    dead = gpu.seeds.set_index("blueprint")["dead_at_birth"]
    assert dead["conv_small"] == True  # noqa: E712
    assert gpu.seeds.set_index("blueprint").loc["placebo", "value_acc_pp"] == 0.0




def test_traces_for_spec_records_every_workload_and_replicate(cache):
    from types import SimpleNamespace

    from esper_ab.replay.evidence import record_traces

    entry = SimpleNamespace(name="digits", data={"n_test": 200},
                            slots=[], blueprints=["norm", "attention"],
                            episode={"steps_per_epoch": 2, "incubation_epochs": 10,
                                     "blend_epochs": 1, "horizon_epochs": 1})
    traces = record_traces(SimpleNamespace(workloads=[entry], replicates=[0, 1]),
                           cache_dir=cache)
    assert traces.replicates == [0, 1]
    assert set(traces.seeds["blueprint"]) == {"norm", "attention", "placebo"}
