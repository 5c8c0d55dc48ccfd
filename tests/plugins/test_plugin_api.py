"""The plug-in API: resolution (entry point, module:attribute), built-ins on the same path,
options as the cache-keying config, open catalogs, ModuleHost, and an episode of a plug-in."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from esper_ab.errors import ConfigError
from esper_ab.plugins import (
    PLACEBO,
    Blueprint,
    BlueprintCatalog,
    ModuleHost,
    list_workloads,
    resolve_workload,
    workload_config,
)


def test_builtins_are_entry_points_resolved_like_any_plugin():
    import tomllib
    from pathlib import Path

    import esper_ab.episodes.workloads.synthetic_cnn as module
    from esper_ab.episodes.workloads import _registry

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"][
        "esper_ab.workloads"]
    # the fallback for installs whose metadata predates the entry points lists the same
    assert declared == _registry._BUILTIN
    for name in ("synthetic-cnn", "synthetic-seq", "digits", "cifar10", "esper-lite-cnn"):
        assert name in list_workloads()
    for name, reference in declared.items():
        if name != "esper-lite-cnn":              # that one needs esper-lite importable
            assert resolve_workload(name) is resolve_workload(reference)
    assert resolve_workload("synthetic-cnn") is module.WORKLOAD


def test_a_pip_installed_package_is_found_by_its_entry_point_and_by_module_attribute(
        shapes_installed):
    import shapes_workload

    assert "shapes" in list_workloads()
    assert resolve_workload("shapes") is shapes_workload.WORKLOAD
    assert resolve_workload("shapes_workload:WORKLOAD") is shapes_workload.WORKLOAD
    by_name, by_ref = workload_config("shapes"), workload_config("shapes_workload:WORKLOAD")
    assert by_name.name == by_ref.name == "shapes"
    assert (by_name.source, by_ref.source) == ("shapes", "shapes_workload:WORKLOAD")
    assert by_name.topology == "shapes-cnn"
    from esper_ab.episodes.workloads import config_hash

    # the reference keys the caches only where it differs from the name
    assert config_hash(by_name) != config_hash(by_ref)
    builtin = workload_config("synthetic-cnn")
    assert builtin.source == "synthetic-cnn"
    assert config_hash(builtin) == config_hash(dataclasses.replace(builtin, source=""))


def test_options_are_the_config_and_their_content_hash_keys_the_caches(shapes_installed):
    from esper_ab.episodes.workloads import config_hash

    a = workload_config("shapes", n_train=64)
    assert a.data.n_train == 64 and a.data.width == 8
    assert config_hash(a) == config_hash(workload_config("shapes", n_train=64))
    assert config_hash(a) != config_hash(workload_config("shapes", n_train=65))
    with pytest.raises(ConfigError, match="does not take these options"):
        workload_config("shapes", n_trian=64)
    with pytest.raises(ConfigError, match="rejects its options"):
        workload_config("shapes", n_train=2)


def test_a_catalog_declares_its_slots_and_widths_and_gets_the_placebo_for_free():
    catalog = BlueprintCatalog("t-cat", (
        Blueprint("late", lambda w: nn.Identity(), slots=("b",)),
        Blueprint("even", lambda w: nn.Identity(),
                  fits=lambda w: None if w % 2 == 0 else "it needs an even width")))
    assert catalog.names() == ("late", "even", PLACEBO)
    assert catalog.misfit("late", "a", 4) == "it fits only slots ['b']"
    assert catalog.misfit("late", "b", 4) is None
    assert catalog.misfit("even", "a", 3) == "it needs an even width"
    with pytest.raises(ConfigError, match="even width"):
        catalog.build("even", width=3)
    placebo = catalog.build(PLACEBO, width=5)
    h = torch.randn(2, 5, 3, 3)
    assert torch.equal(placebo(h), h)
    with pytest.raises(ConfigError, match="distinct name"):
        BlueprintCatalog("dup", (Blueprint("x", nn.Identity), Blueprint("x", nn.Identity)))


def test_module_host_routes_named_submodule_outputs_through_the_hook_and_leaves_no_hooks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    host = ModuleHost(net, ["1", "2"], example_input=torch.zeros(1, 1, 5, 5))
    assert host.slot_names == ("1", "2")
    assert (host.slot_width("1"), host.slot_width("2")) == (4, 6)
    x = torch.randn(3, 1, 5, 5)
    seen = []

    def hook(slot, h):
        seen.append((slot, tuple(h.shape)))
        return torch.zeros_like(h) if slot == "2" else h

    out = host(x, hook)
    assert seen == [("1", (3, 4, 5, 5)), ("2", (3, 6, 5, 5))]
    assert torch.allclose(out, net[5](torch.zeros(3, 6)))          # the hook's value went on
    assert torch.equal(host(x), net(x))                               # no hook: the plain net
    assert all(not m._forward_hooks for m in net.modules())           # nothing left behind
    with pytest.raises(ConfigError, match="not a submodule"):
        ModuleHost(net, ["9"], widths={"9": 1})
    with pytest.raises(ConfigError, match="example_input"):
        ModuleHost(net, ["1"])


def test_an_episode_of_the_plugin_grows_each_blueprint_where_it_fits(shapes_installed,
                                                                      tmp_path):
    from esper_ab.episodes import episode_config, run_episode

    config = episode_config("shapes_workload:WORKLOAD", size="tiny", slots=["stem", "body"],
                            incubation_epochs=3, horizon_epochs=1)
    result = run_episode(config, replicate=0, cache_dir=tmp_path)
    seeds = result.seeds
    assert list(zip(seeds["slot"], seeds["blueprint"], strict=True)) == [
        ("stem", "gain"), ("stem", "smooth"), ("stem", "placebo"),
        ("body", "gain"), ("body", "mixer"), ("body", "smooth"), ("body", "placebo")]
    # documented parameter counts (C, C^2 + C, 10C) at widths 8 (stem) and 16 (body)
    assert list(seeds["n_params"]) == [8, 80, 1, 16, 272, 160, 1]
    assert (seeds.loc[seeds["blueprint"] == "placebo", "value_acc_pp"] == 0).all()
    assert set(result.trace["blueprint"]) == {"gain", "mixer", "smooth", "placebo"}
    again = run_episode(config, replicate=0, cache_dir=tmp_path)
    assert again.timings.loaded                                        # the cache key held


@pytest.mark.gpu
def test_a_plugin_episode_runs_on_cuda_as_the_builtins_do(shapes_installed, tmp_path):
    from esper_ab.episodes import episode_config, run_episode

    config = episode_config("shapes", size="tiny", incubation_epochs=3, horizon_epochs=1)
    result = run_episode(config, replicate=0, cache_dir=None, device="cuda")
    assert result.device == "cuda"
    assert (result.seeds.loc[result.seeds["blueprint"] == "placebo", "value_acc_pp"] == 0).all()


def test_training_steps_use_the_workloads_own_loss(shapes_installed):
    import shapes_workload

    from esper_ab.episodes._training import pretrain_host
    from esper_ab.episodes.workloads import build_workload

    calls = []

    def zero_loss(logits, y):
        calls.append(tuple(logits.shape))
        return 0.0 * logits.sum()

    frozen = dataclasses.replace(shapes_workload.WORKLOAD, name="shapes-zero-loss",
                                 loss=zero_loss,
                                 pretrain=dataclasses.replace(shapes_workload.WORKLOAD.pretrain,
                                                              steps=3, weight_decay=0.0))
    shapes_workload.ZERO_LOSS = frozen
    config = workload_config("shapes_workload:ZERO_LOSS", n_train=16, n_test=16)
    workload = build_workload(config, seed=0)
    state, _ = pretrain_host(workload, replicate=0, device=torch.device("cpu"), cache_dir=None)
    assert len(calls) == 3 and calls[0][1] == 4                 # (batch, 4 classes)
    from esper_ab.episodes._training import generator, phase_seed

    fresh = workload.build_host(generator=generator(phase_seed(0, "host")))
    conv = "module.stem.0.weight"
    assert torch.equal(state.host[conv], fresh.state_dict()[conv])  # zero loss: no learning


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


_GEN = torch.Generator().manual_seed(0)
MINIMAL_DATA = (torch.randn(40, 6, generator=_GEN), torch.randint(0, 3, (40,), generator=_GEN),
                torch.randn(20, 6, generator=_GEN), torch.randint(0, 3, (20,), generator=_GEN))


def _minimal():
    from esper_ab.plugins import WorkloadData, WorkloadPlugin

    return WorkloadPlugin(
        name="minimal", default_slot="body",
        host=lambda config: ModuleHost(_TinyNet(), ["body"], widths={"body": 5}),
        data=WorkloadData(*MINIMAL_DATA),                  # fixed tensors
        catalog=BlueprintCatalog.from_factories("minimal-cat", {"lin": lambda w: nn.Linear(w, w)}))


MINIMAL = _minimal   # a function returning the plug-in is a valid module:attribute target


def test_a_minimal_plugin_keeps_its_options_as_a_frozen_mapping_and_fixed_tensors():
    from esper_ab.episodes.workloads import build_workload, config_hash
    from esper_ab.plugins import check_workload

    config = workload_config("test_plugin_api:MINIMAL", lr_hint=0.5, layers=[1, 2])
    assert config.data["lr_hint"] == 0.5 and config.data["layers"] == (1, 2)
    assert config_hash(config) != config_hash(workload_config("test_plugin_api:MINIMAL"))
    assert config.catalog.names() == ("lin", PLACEBO)
    workload = build_workload(config, seed=5)
    assert torch.equal(workload.train_x, MINIMAL_DATA[0])
    report = check_workload(config)
    assert report.slot_widths == {"body": 5} and report.blueprints == ("lin", PLACEBO)
