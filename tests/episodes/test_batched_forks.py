"""Batched value forks (``_stacked``) against one-at-a-time forks.

The documented tolerance (docs/PERFORMANCE.md, "Batched value forks"): the batched forks
differ from the serial ones only in float32 summation order, so every fork's held-out loss
agrees within ``LOSS_TOL`` (absolute), at most ``FLIP_TOL`` of its held-out predictions
differ, the same seeds are valuable and the gate decisions are identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esper_ab.episodes import _stacked as stacked
from esper_ab.episodes import _value_forks as value_forks
from esper_ab.episodes._incubation import IncubationSettings, SeedKey, incubate
from esper_ab.episodes._training import pretrain_host, train_step
from esper_ab.episodes.hosts import CNNHost, CNNHostConfig
from esper_ab.episodes.runner import episode_config, gate_decisions
from esper_ab.episodes.tables import param_counts_by_type, seed_table, trace_table
from esper_ab.episodes.workloads import build_workload, task_loss
from esper_ab.gate import build_gate

torch.set_num_threads(1)
CPU = torch.device("cpu")
LOSS_TOL = 2e-3        # held-out mean cross-entropy, absolute
FLIP_TOL = 0.01        # fraction of one fork's held-out predictions that may differ
SLOTS = ("block1.post_pool", "block2.pre_pool", "block3.pre_pool")


def _perturbed_hosts(k: int):
    config = CNNHostConfig(in_channels=3, n_classes=4, base_width=4, n_blocks=3, image_size=8)
    torch.manual_seed(0)
    base = CNNHost(config)
    model = stacked.StackedCNN(base, k)
    hosts = []
    with torch.no_grad():
        for p in model.host_parameters():
            p.add_(0.1 * torch.randn_like(p))    # every fork its own parameters
    for j in range(k):
        host = CNNHost(config)
        host.load_state_dict(base.state_dict())
        with torch.no_grad():
            for hp, sp in zip(host.parameters(), model.host_parameters(), strict=True):
                hp.copy_(sp[j])
        hosts.append(host)
    return model, hosts


def test_stacked_forward_and_gradients_equal_separate_hosts():
    k = 3
    model, hosts = _perturbed_hosts(k)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 3, 8, 8, generator=gen), torch.randint(0, 4, (5,), generator=gen)
    logits = model(x)
    assert logits.shape == (5, k, 4)
    stacked.stacked_loss(logits, y).backward()
    for j, host in enumerate(hosts):
        out = host(x)                      # one forward: BatchNorm updates once, as above
        torch.testing.assert_close(logits[:, j], out, rtol=1e-5, atol=1e-6)
        task_loss(out, y).backward()
        for hp, sp in zip(host.parameters(), model.host_parameters(), strict=True):
            torch.testing.assert_close(sp.grad[j], hp.grad, rtol=1e-4, atol=1e-6)
    # the BatchNorm running statistics moved per fork, as each host's did
    for i, _ in enumerate(hosts[0].norms):
        for j, host in enumerate(hosts):
            c = host.norms[i].num_features
            torch.testing.assert_close(getattr(model, f"rm{i}")[j * c:(j + 1) * c],
                                       host.norms[i].running_mean, rtol=1e-5, atol=1e-6)


def test_per_fork_clipping_is_clip_grad_norm_on_each_fork():
    k = 4
    model, hosts = _perturbed_hosts(k)
    gen = torch.Generator().manual_seed(2)
    for p in model.host_parameters():
        p.grad = torch.randn(p.shape, generator=gen) * torch.linspace(0.1, 3.0, k).view(
            k, *([1] * (p.dim() - 1)))
    expected = []
    for j in range(k):
        grads = [p.grad[j].clone().requires_grad_(False) for p in model.host_parameters()]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, 1.5, foreach=False)
        expected.append([p.grad for p in params])
    stacked.clip_per_fork_(model.host_parameters(), 1.5)
    for j in range(k):
        for p, e in zip(model.host_parameters(), expected[j], strict=True):
            torch.testing.assert_close(p.grad[j], e, rtol=1e-6, atol=1e-7)


def test_only_the_cnn_host_is_stacked_and_the_transformer_runs_serially():
    seq = episode_config("synthetic-seq", size="tiny")
    assert not stacked.supports(build_workload(seq.workload, seed=0).build_host())
    cnn = episode_config("synthetic-cnn", size="tiny")
    assert stacked.supports(build_workload(cnn.workload, seed=0).build_host())


@pytest.fixture(scope="module")
def three_slot_episode():
    """A tiny synthetic-cnn episode at the flagship's three slots, up to the decision point,
    with its forks measured one at a time and batched."""
    config = episode_config("synthetic-cnn", size="tiny", slots=SLOTS)
    workload = build_workload(config.workload, seed=1)
    keys = [SeedKey(s, b) for s in config.resolved_slots for b in config.resolved_blueprints]
    settings = IncubationSettings(
        steps_per_epoch=config.steps_per_epoch, epochs=config.incubation_epochs,
        batch_size=config.batch_size, host_lr=config.host_lr, seed_lr=config.seed_lr,
        weight_decay=config.weight_decay, grad_clip=config.grad_clip)
    forks = value_forks.ForkSettings(
        blend_steps=config.blend_epochs * config.steps_per_epoch,
        horizon_steps=3 * config.steps_per_epoch, ramp=config.ramp,
        eval_batch_size=config.eval_batch_size)
    start, _ = pretrain_host(workload, replicate=1, device=CPU, cache_dir=None)
    incubated = incubate(workload, start, keys, settings, replicate=1, device=CPU)
    serial = value_forks.measure_values(workload, incubated, settings, forks, replicate=1,
                                        device=CPU, batched=False)
    calls = []
    batched = value_forks.measure_values(workload, incubated, settings, forks, replicate=1,
                                         device=CPU, batched=True,
                                         on_fork=lambda: calls.append(1))
    return config, workload, incubated, serial, batched, len(calls)


def test_batched_forks_equal_serial_forks_within_the_float_tolerance(three_slot_episode):
    _, _, incubated, (c0, serial), (c1, batched), n_calls = three_slot_episode
    assert n_calls == len(incubated.keys) + 1 == 28      # progress still counts every fork
    assert list(batched) == list(serial)
    for a, b in [(c0, c1), *[(serial[s], batched[s]) for s in serial]]:
        assert abs(a.heldout_loss - b.heldout_loss) <= LOSS_TOL
        assert np.mean(a.correct != b.correct) <= FLIP_TOL
        assert abs(a.heldout_acc - b.heldout_acc) <= FLIP_TOL
        assert abs(a.heldout_acc_seed_off - b.heldout_acc_seed_off) <= FLIP_TOL
    # the forks really differ from each other: a batched run that mixed them up would not
    assert len({round(o.heldout_loss, 6) for o in batched.values()}) > 5


def test_batched_forks_keep_values_valuable_seeds_and_gate_decisions(three_slot_episode):
    config, workload, incubated, (c0, serial), (c1, batched), _ = three_slot_episode
    host = workload.build_host()
    widths = {s: host.slot_width(s) for s in SLOTS}
    from esper_ab.episodes._incubation import germinate

    seeds = germinate(incubated.keys, host, topology="cnn", replicate=1, device=CPU)
    counts = {sid: param_counts_by_type(m) for sid, m in seeds.items()}
    trace = trace_table(incubated, replicate=1, workload=config.workload.name)

    def table(control, outcomes):
        return seed_table(incubated, control, outcomes, replicate=1,
                          workload=config.workload.name, slot_widths=widths,
                          param_counts=counts, margin_pp=config.margin_pp,
                          decision_heldout=(1.0, 0.5), trace=trace)

    a, b = table(c0, serial), table(c1, batched)
    assert a["valuable"].tolist() == b["valuable"].tolist()
    np.testing.assert_allclose(a["value_acc_pp"], b["value_acc_pp"], atol=100 * 2 * FLIP_TOL)
    np.testing.assert_allclose(a["value_loss"], b["value_loss"], atol=2 * LOSS_TOL)

    class _Result:   # what gate_decisions reads of an EpisodeResult
        def __init__(self, seeds):
            self.seeds, self.trace = seeds, trace

    # what the fairness metrics count: (G2 passed, valuable) per gated seed, identical (the
    # gate reads the incubation trace, which the forks do not touch)
    d = gate_decisions(_Result(a), gate=build_gate("esper_lite_baseline")).set_index("seed_id")
    pairs = [[(bool(d.loc[s, "passed"]), bool(v))
              for s, v in zip(t["seed_id"], t["valuable"], strict=True) if s in d.index]
             for t in (a, b)]
    assert pairs[0] == pairs[1] and len(pairs[0]) == 24


def test_a_fork_step_in_the_stack_is_the_serial_step(three_slot_episode):
    """One training step of the stacked host with no seed equals train_step on the host."""
    _, workload, incubated, *_ = three_slot_episode
    from esper_ab.episodes._incubation import load_host

    host, _ = load_host(workload, incubated.host, settings_lr=1e-3, weight_decay=0.0,
                        device=CPU)
    model = stacked.StackedCNN(host, 2)
    idx = torch.arange(16)
    stacked.stacked_loss(model(workload.train_x[idx]), workload.train_y[idx]).backward()
    train_step(host, workload, idx, hook=None, device=CPU)
    for hp, sp in zip(host.parameters(), model.host_parameters(), strict=True):
        torch.testing.assert_close(sp.grad[0], hp.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(sp.grad[1], hp.grad, rtol=1e-4, atol=1e-6)


def test_grouped_seed_clipping_is_clip_grad_norm_on_each_group():
    gen = torch.Generator().manual_seed(3)
    shapes = [[(3, 4), (5,)], [(2,)], [], [(4, 4, 3), (1,), (2, 2)]]
    scales = [0.2, 9.0, 1.0, 4.0]
    groups, expected = [], []
    for shape_list, scale in zip(shapes, scales, strict=True):
        params = [torch.nn.Parameter(torch.zeros(s)) for s in shape_list]
        twins = [torch.nn.Parameter(torch.zeros(s)) for s in shape_list]
        for p, t in zip(params, twins, strict=True):
            p.grad = scale * torch.randn(p.shape, generator=gen)
            t.grad = p.grad.clone()
        torch.nn.utils.clip_grad_norm_(twins, 2.0, foreach=False)
        groups.append(params)
        expected.append(twins)
    stacked.clip_groups_(groups, 2.0)
    for params, twins in zip(groups, expected, strict=True):
        for p, t in zip(params, twins, strict=True):
            torch.testing.assert_close(p.grad, t.grad, rtol=1e-6, atol=1e-7)
    # the large groups were scaled down, the small one left alone
    assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in groups[1]])) < 2.0 + 1e-5


def test_merged_adamw_steps_like_the_separate_optimizers():
    gen = torch.Generator().manual_seed(4)
    init = [torch.randn(3, generator=gen) for _ in range(2)]
    a = [torch.nn.Parameter(v.clone()) for v in init]
    b = [torch.nn.Parameter(v.clone()) for v in init]
    opts_a = [torch.optim.AdamW([p], lr=0.1, weight_decay=0.01, foreach=False) for p in a]
    opts_b = [torch.optim.AdamW([p], lr=0.1, weight_decay=0.01, foreach=False) for p in b]
    for step in range(3):
        grads = [torch.randn(3, generator=gen) for _ in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        for opt in opts_a:
            opt.step()
        if step < 2:        # two steps apart, then one merged step with the carried state
            for opt in opts_b:
                opt.step()
        else:
            merged = stacked.merged_adamw(opts_b, lr=0.1, weight_decay=0.01)
            merged.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0)
    # the original optimizers still export the current state (incubation saves it per seed)
    for oa, ob in zip(opts_a, opts_b, strict=True):
        sa, sb = oa.state_dict()["state"][0], ob.state_dict()["state"][0]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    fresh = torch.nn.Parameter(torch.zeros(2))
    fresh_opt = torch.optim.AdamW([fresh], lr=0.1, foreach=False)
    fresh.grad = torch.ones(2)
    stacked.merged_adamw([fresh_opt], lr=0.1, weight_decay=0.01).step()
    assert int(fresh_opt.state_dict()["state"][0]["step"]) == 1
    assert stacked.merged_adamw([], lr=0.1, weight_decay=0.0) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_forks_on_cuda_equal_serial_forks_on_cuda():
    config = episode_config("synthetic-cnn", size="tiny", slots=SLOTS[1:])
    cuda = torch.device("cuda")
    workload = build_workload(config.workload, seed=2).to(cuda)
    keys = [SeedKey(s, b) for s in config.resolved_slots for b in config.resolved_blueprints]
    settings = IncubationSettings(
        steps_per_epoch=2, epochs=2, batch_size=config.batch_size, host_lr=config.host_lr,
        seed_lr=config.seed_lr, weight_decay=config.weight_decay, grad_clip=config.grad_clip)
    forks = value_forks.ForkSettings(blend_steps=2, horizon_steps=4, ramp="linear",
                                     eval_batch_size=256)
    start, _ = pretrain_host(workload, replicate=2, device=cuda, cache_dir=None)
    incubated = incubate(workload, start, keys, settings, replicate=2, device=cuda)
    (c0, serial), (c1, batched) = (
        value_forks.measure_values(workload, incubated, settings, forks, replicate=2,
                                   device=cuda, batched=b) for b in (False, True))
    for a, b in [(c0, c1), *[(serial[s], batched[s]) for s in serial]]:
        assert abs(a.heldout_loss - b.heldout_loss) <= LOSS_TOL
        assert np.mean(a.correct != b.correct) <= FLIP_TOL
