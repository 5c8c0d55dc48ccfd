"""The episode cache loads safely: a cached pickle that would run code is refused and never
runs (``weights_only=True``), a changed file is refused by its recorded sha256 in one line,
a file the index does not know is recomputed rather than loaded."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esper_ab.episodes._cache import INDEX, load_tensors, save_tensors
from esper_ab.episodes._training import pretrain_host
from esper_ab.episodes.runner import episode_config
from esper_ab.episodes.workloads import build_workload
from esper_ab.errors import DataError

CPU = torch.device("cpu")


class _Payload:
    """Unpickling it runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _blob() -> dict:
    return {"host": {"w": torch.arange(6.0).reshape(2, 3)},
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}},
                          "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}}


def _poison(path: Path, marker: Path, *, as_torch_file: bool) -> None:
    if as_torch_file:
        torch.save({"host": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"host": _Payload(marker)}))


def _forge_index(path: Path) -> None:
    import hashlib

    index = json.loads((path.parent / INDEX).read_text())
    index[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / INDEX).write_text(json.dumps(index))


def test_round_trip_of_a_plain_state_dict(tmp_path):
    path = tmp_path / "host-x.pt"
    save_tensors(path, _blob())
    back = load_tensors(path)
    assert torch.equal(back["host"]["w"], _blob()["host"]["w"])
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert json.loads((tmp_path / INDEX).read_text()).keys() == {"host-x.pt"}


@pytest.mark.parametrize("as_torch_file", [True, False])
def test_a_replaced_file_is_refused_by_its_hash_and_never_runs(tmp_path, as_torch_file):
    path, marker = tmp_path / "host-x.pt", tmp_path / "pwned"
    save_tensors(path, _blob())
    _poison(path, marker, as_torch_file=as_torch_file)
    with pytest.raises(DataError, match="does not match the sha256") as err:
        load_tensors(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("as_torch_file", [True, False])
def test_a_poisoned_file_with_a_forged_index_is_refused_and_never_runs(tmp_path,
                                                                      as_torch_file):
    path, marker = tmp_path / "host-x.pt", tmp_path / "pwned"
    save_tensors(path, _blob())
    _poison(path, marker, as_torch_file=as_torch_file)
    _forge_index(path)
    with pytest.raises(DataError, match="not a plain tensor state dict") as err:
        load_tensors(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_a_file_the_index_does_not_know_is_not_loaded(tmp_path):
    path, marker = tmp_path / "host-x.pt", tmp_path / "pwned"
    _poison(path, marker, as_torch_file=True)
    assert load_tensors(path) is None                 # recomputed by the caller
    assert not marker.exists()


def test_pretrain_host_caches_verified_and_refuses_a_swap(tmp_path):
    config = episode_config("synthetic-cnn", size="tiny")
    workload = build_workload(config.workload, seed=0)
    first, loaded = pretrain_host(workload, replicate=0, device=CPU, cache_dir=tmp_path)
    again, loaded_again = pretrain_host(workload, replicate=0, device=CPU, cache_dir=tmp_path)
    assert (loaded, loaded_again) == (False, True)
    for k, v in first.host.items():
        assert torch.equal(v, again.host[k])
    [path] = tmp_path.glob("host-*.pt")
    marker = tmp_path / "pwned"
    _poison(path, marker, as_torch_file=True)
    with pytest.raises(DataError, match="does not match the sha256"):
        pretrain_host(workload, replicate=0, device=CPU, cache_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.slow
def test_episode_command_refuses_a_poisoned_host_in_one_line(tmp_path):
    """The reviewer's attack: the next ``esper-ab episode`` must not run the payload."""
    cache = tmp_path / "cache"
    cmd = [str(Path(sys.executable).with_name("esper-ab")), "episode", "--workload",
           "synthetic-cnn", "--replicate", "0", "--size", "tiny", "--cache-dir", str(cache),
           "--out", str(tmp_path / "out"), "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    [host] = (cache / "hosts").glob("host-*.pt")
    for folder in (cache / "episodes").iterdir():     # force a re-run from the host file
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    marker = tmp_path / "pwned"
    _poison(host, marker, as_torch_file=True)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "sha256" in lines[0] and "Traceback" not in second.stderr
    assert not marker.exists()
