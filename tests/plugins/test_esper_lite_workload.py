"""esper-lite's own CNN host and CNN catalog as the ``esper-lite-cnn`` workload (marker
``esper_lite``; skipped when esper-lite is not importable). Run in an esper-lite
environment::

    PYTHONPATH=.:/path/to/esper-lite/src python -m pytest -m esper_lite tests/plugins
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from esper_ab.plugins import check_workload, resolve_workload, workload_config

pytestmark = pytest.mark.esper_lite
host_mod = pytest.importorskip("esper.kasmina.host", reason="esper-lite is not importable "
                               "(put its src/ on PYTHONPATH to run these tests)")
blueprints = pytest.importorskip("esper.kasmina.blueprints")


def test_the_host_is_cifar_baseline_and_the_catalog_is_esper_lites_own():
    config = workload_config("esper-lite-cnn")
    plugin = resolve_workload("esper-lite-cnn")
    host = plugin.build_host(config)
    reference = host_mod.CNNHost(num_classes=10, base_channels=8)   # tasks.cifar_baseline
    n_host = sum(p.numel() for p in host.parameters())
    assert n_host == sum(p.numel() for p in reference.parameters())
    assert 6000 < n_host < 7000                                       # "about 6.4k"
    assert host.slot_names == tuple(reference.execution_order())
    assert [host.slot_width(s) for s in ("r0c0", "r0c1", "r0c2")] == [8, 16, 32]
    names = [s.name for s in blueprints.BlueprintRegistry.list_for_topology("cnn")]
    assert config.catalog.names() == (*names, "placebo")
    for name in names:                        # built by esper-lite's own factory
        seed = config.catalog.build(name, width=16)
        assert type(seed).__module__.startswith("esper.") or name == "noop"


def test_the_hooked_forward_is_esper_lites_own_forward_bit_for_bit():
    config = workload_config("esper-lite-cnn", n_train=16, n_test=16)
    host = resolve_workload("esper-lite-cnn").build_host(config)
    host.eval()
    x = torch.randn(4, 3, 32, 32)
    seen = []
    out = host(x, lambda slot, h: seen.append(slot) or h)
    assert seen == list(host.slot_names)
    assert torch.equal(out, host.host(x))
    report = check_workload(config, slots=["r0c0", "r1c0", "r0c1", "r1c1", "r0c2"])
    assert "conv_heavy" in report.blueprints


def _fake_cifar(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name, n in (("data_batch_1", 40), ("test_batch", 30)):
        blob = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (folder / name).write_bytes(pickle.dumps(blob))


def test_data_is_a_local_cifar_folder_or_generated(tmp_path):
    _fake_cifar(tmp_path / "cifar")
    plugin = resolve_workload("esper-lite-cnn")
    folder = workload_config("esper-lite-cnn", data_dir=str(tmp_path / "cifar"), n_train=32,
                             n_test=20)
    data = plugin.build_data(folder, 0)
    assert data.train_x.shape == (32, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    generated = plugin.build_data(workload_config("esper-lite-cnn", n_train=32, n_test=20), 0)
    assert generated.train_x.shape == (32, 3, 32, 32)
    assert set(generated.train_y.tolist()) <= {0, 1, 2, 3}


def test_a_tiny_episode_measures_every_esper_lite_seed_against_the_placebo(tmp_path):
    from esper_ab.episodes import episode_config, run_episode

    torch.set_num_threads(1)
    config = episode_config("esper-lite-cnn", size="tiny", slots=["r0c1"],
                            incubation_epochs=3, horizon_epochs=1)
    result = run_episode(config, replicate=0, cache_dir=tmp_path)
    seeds = result.seeds.set_index("blueprint")
    assert list(seeds.index) == list(config.workload.catalog.names())
    assert seeds.loc["placebo", "value_acc_pp"] == 0
    assert seeds.loc["noop", "n_params"] == 0
    assert seeds.loc["conv_heavy", "n_params"] > seeds.loc["norm", "n_params"]
