"""Every cache is tamper-evident and self-healing (issue 19, item 1).

Episodes, closed-loop runs and hosts each keep ``index.json`` (sha256 and size of every file,
written last). An edited file -- one that still reads, e.g. every seed made "valuable" -- is
refused in one line naming it; a truncated, unreadable or unindexed one is recomputed with
one note line; nothing from a bad file is ever used. Real files, real episodes (tiny), the
real CLI for the end-to-end case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from esper_ab.episodes import SEED_FILE, run_episode
from esper_ab.episodes._cache import INDEX, load_tensors, save_tensors
from esper_ab.episodes.runner import episode_config
from esper_ab.errors import DataError
from esper_ab.gate import PRESETS
from esper_ab.study.confirmation import ConfirmJob, _cached, _closed_loop_task

ESPER_AB = str(Path(sys.executable).with_name("esper-ab"))


@pytest.fixture(scope="module")
def episode_cache(tmp_path_factory):
    """One tiny episode, computed once; each test works on a copy of its cache."""
    root = tmp_path_factory.mktemp("episode-cache")
    config = episode_config("synthetic-cnn", size="tiny")
    result = run_episode(config, replicate=0, cache_dir=root)
    return root, config, result


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _folder(cache: Path) -> Path:
    [folder] = (cache / "episodes").iterdir()
    return folder


def _every_seed_valuable(path: Path) -> None:
    """The probe's edit: every seed 'valuable', +50 pp -- a file that still reads."""
    seeds = pd.read_parquet(path)
    seeds = seeds.assign(valuable=True, value_acc_pp=seeds["value_acc_pp"] + 50.0)
    seeds.to_parquet(path, index=False)


def test_an_episode_folder_is_sealed_with_an_index_written_last(episode_cache):
    root, _, _ = episode_cache
    folder = _folder(root)
    index = json.loads((folder / INDEX).read_text())
    assert set(index) == {"seeds.parquet", "trace.parquet", "episode.json"}
    import hashlib

    for name, entry in index.items():     # checked against an independent hash of the bytes
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_an_edited_seed_table_is_refused_in_one_line_naming_it(episode_cache, tmp_path):
    root, config, _ = episode_cache
    cache = _copy(root, tmp_path / "cache")
    path = _folder(cache) / SEED_FILE
    _every_seed_valuable(path)
    with pytest.raises(DataError, match="does not match the sha256") as err:
        run_episode(config, replicate=0, cache_dir=cache)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert pd.read_parquet(path)["valuable"].all()     # left as found: nothing recomputed over it


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted", "no index"])
def test_a_damaged_episode_is_recomputed_with_a_note(episode_cache, tmp_path, capsys, damage):
    root, config, original = episode_cache
    cache = _copy(root, tmp_path / "cache")
    folder = _folder(cache)
    path = folder / SEED_FILE
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 4096)
    elif damage == "deleted":
        path.unlink()
    else:
        (folder / INDEX).unlink()
    again = run_episode(config, replicate=0, cache_dir=cache)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("esper-ab: note:") and "recomputed" in err[0]
    assert not again.timings.loaded                          # recomputed, not read
    pd.testing.assert_frame_equal(again.seeds, original.seeds)
    # healed: the folder is sealed again and the next call loads it silently
    third = run_episode(config, replicate=0, cache_dir=cache)
    assert third.timings.loaded and capsys.readouterr().err == ""
    pd.testing.assert_frame_equal(third.seeds, original.seeds)
    assert sorted(p.name for p in (cache / "episodes").iterdir()) == [folder.name]


@pytest.mark.slow
def test_the_cli_refuses_an_edited_episode_and_heals_a_truncated_one(episode_cache, tmp_path):
    root, _, _ = episode_cache
    cache = _copy(root, tmp_path / "cache")
    cmd = [ESPER_AB, "episode", "--workload", "synthetic-cnn", "--replicate", "0", "--size",
           "tiny", "--cache-dir", str(cache), "--out", str(tmp_path / "out"), "--no-progress"]
    path = _folder(cache) / SEED_FILE
    _every_seed_valuable(path)
    edited = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert edited.returncode == 2, edited.stdout + edited.stderr
    [line] = edited.stderr.strip().splitlines()
    assert "seeds.parquet" in line and "sha256" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    path.write_bytes(path.read_bytes()[:100])                  # now truncate it
    healed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert healed.returncode == 0, healed.stderr
    notes = [x for x in healed.stderr.splitlines() if x.strip()]
    assert len(notes) == 1 and "truncated or unreadable" in notes[0]
    assert "Traceback" not in healed.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(path),            # recomputed, as first
                                  pd.read_parquet(_folder(root) / SEED_FILE))


# -- closed-loop runs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def closed_loop_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("closed-loop-cache")
    job = ConfirmJob("candidate", PRESETS["esper_lite_baseline"], "synthetic-cnn", 0,
                     episode_config("synthetic-cnn", size="tiny"))
    out = _closed_loop_task(job, str(root), 1)
    return root, job, out["table"]


def test_a_closed_loop_run_is_sealed_and_loads_verified(closed_loop_cache):
    root, job, table = closed_loop_cache
    [folder] = (root / "closed_loop").iterdir()
    assert set(json.loads((folder / INDEX).read_text())) == {"table.parquet", "run.json"}
    loaded, meta = _cached(job, root)
    pd.testing.assert_frame_equal(loaded, table)
    assert meta["device"] == "cpu"


def test_an_edited_closed_loop_table_is_refused(closed_loop_cache, tmp_path):
    root, job, _ = closed_loop_cache
    cache = _copy(root, tmp_path / "cache")
    [folder] = (cache / "closed_loop").iterdir()
    table = pd.read_parquet(folder / "table.parquet")
    table.assign(admitted=True).to_parquet(folder / "table.parquet", index=False)
    with pytest.raises(DataError, match="table.parquet.*does not match the sha256"):
        _cached(job, cache)


def test_a_truncated_closed_loop_table_is_not_used(closed_loop_cache, tmp_path, capsys):
    root, job, table = closed_loop_cache
    cache = _copy(root, tmp_path / "cache")
    [folder] = (cache / "closed_loop").iterdir()
    path = folder / "table.parquet"
    path.write_bytes(path.read_bytes()[:64])
    assert _cached(job, cache) is None                      # the caller runs it again
    assert "truncated or unreadable" in capsys.readouterr().err
    out = _closed_loop_task(job, str(cache), 1)             # and the rerun replaces it
    loaded, _ = _cached(job, cache)
    pd.testing.assert_frame_equal(loaded, out["table"])
    pd.testing.assert_frame_equal(loaded, table)


# -- hosts -------------------------------------------------------------------------------

def _blob() -> dict:
    return {"host": {"w": torch.arange(6.0).reshape(2, 3)}, "optimizer": {"state": {}}}


def test_an_edited_host_file_that_still_loads_is_refused(tmp_path):
    path = tmp_path / "host-x.pt"
    save_tensors(path, _blob())
    torch.save({"host": {"w": torch.zeros(2, 3)}, "optimizer": {"state": {}}}, path)
    with pytest.raises(DataError, match="host-x.pt.*does not match the sha256"):
        load_tensors(path)


@pytest.mark.parametrize("cut", [0, 10, 200, -1])
def test_a_truncated_host_file_is_recomputed_with_a_note(tmp_path, capsys, cut):
    path = tmp_path / "host-x.pt"
    save_tensors(path, _blob())
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    assert load_tensors(path) is None
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("esper-ab: note:") and "host-x.pt" in line
    save_tensors(path, _blob())                               # the caller's recompute
    assert torch.equal(load_tensors(path)["host"]["w"], _blob()["host"]["w"])
