"""Batched value forks are the default for the CNN host, under their own episode format.

An episode's format is part of its cache key (``runner.episode_format``): ``episode-v2`` when
the forks are trained together (the CNN host), ``episode-v1`` when they run one at a time
(``forks: serial``, and every host that cannot be stacked). So the caches recorded before
batching keep their keys and their values, and a batched episode never takes a serial one's
place silently. The tolerance between the two is the one of ``test_batched_forks.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from esper_ab.episodes import BATCHED_FORMAT, EPISODE_FORMAT, episode_format, episode_key
from esper_ab.episodes.runner import episode_config, gate_decisions, run_episode
from esper_ab.errors import ConfigError
from esper_ab.gate import build_gate

SLOTS = ("block1.post_pool", "block2.pre_pool", "block3.pre_pool")
LOSS_TOL = 2e-3      # as tests/episodes/test_batched_forks.py
FLIP_TOL = 0.01


def test_the_cnn_host_defaults_to_batched_forks_and_the_transformer_stays_serial():
    cnn = episode_config("synthetic-cnn", size="tiny")
    assert cnn.forks == "batched" and cnn.batched_forks
    assert episode_format(cnn) == BATCHED_FORMAT == "episode-v2"
    serial = cnn.replace(forks="serial")
    assert not serial.batched_forks and episode_format(serial) == EPISODE_FORMAT == "episode-v1"
    seq = episode_config("synthetic-seq", size="tiny")
    assert seq.forks == "batched" and not seq.batched_forks     # a GPT host is not stacked
    assert episode_format(seq) == EPISODE_FORMAT


def test_serial_and_unstackable_episodes_keep_the_keys_they_had_before_batching():
    # the keys below were computed by the code of 0817a61 (before batching was the default),
    # config_hash(config, replicate, "cpu", "episode-v1"): the caches and the findings
    # recorded then are served as they are
    flagship = episode_config("synthetic-cnn", slots=SLOTS)
    assert episode_key(flagship.replace(forks="serial"), 20, "cpu") == "3f5059014aef5d5f"
    assert episode_key(episode_config("synthetic-cnn", size="tiny", forks="serial"), 0,
                       "cpu") == "8af464016d208323"
    seq = episode_config("synthetic-seq")
    assert episode_key(seq, 20, "cpu") == "60798c1e03c9eb7b"
    assert episode_key(seq.replace(forks="serial"), 20, "cpu") == "60798c1e03c9eb7b"
    # a batched CNN episode has a key of its own
    assert episode_key(flagship, 20, "cpu") not in {"3f5059014aef5d5f"}
    assert episode_key(flagship, 20, "cpu") == episode_key(flagship, 20, "cpu")


def test_an_unknown_forks_value_is_refused_naming_it():
    with pytest.raises(ConfigError, match="forks.*'both'.*'batched' or 'serial'"):
        episode_config("synthetic-cnn", size="tiny", forks="both")


def test_a_space_can_ask_for_serial_forks():
    from esper_ab.study.spec import parse_sweep_spec

    def spec(episode):
        return parse_sweep_spec({
            "name": "forks", "workloads": [{"name": "synthetic-cnn", "episode": episode}],
            "replicates": {"search": [0, 1]}, "strategies": [{"name": "baseline"}],
            "num_samples": 1}, source="test")

    assert spec({}).workloads[0].episode_config().batched_forks
    assert not spec({"forks": "serial"}).workloads[0].episode_config().batched_forks


@pytest.fixture(scope="module")
def both_episodes(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("cache")
    config = episode_config("synthetic-cnn", size="tiny", slots=SLOTS)
    batched = run_episode(config, replicate=1, cache_dir=cache)
    serial = run_episode(config.replace(forks="serial"), replicate=1, cache_dir=cache)
    return cache, config, batched, serial


def test_a_batched_episode_is_a_serial_episode_within_the_float_tolerance(both_episodes):
    cache, config, batched, serial = both_episodes
    # the incubation trace (what every gate reads) is identical, bit for bit
    pd.testing.assert_frame_equal(batched.trace, serial.trace, check_exact=True)
    a = serial.seeds.set_index("seed_id")
    b = batched.seeds.set_index("seed_id").loc[a.index]
    assert len(a) == 27                       # the whole catalog at three slots
    assert a["valuable"].tolist() == b["valuable"].tolist()
    np.testing.assert_allclose(a["value_acc_pp"], b["value_acc_pp"], atol=100 * 2 * FLIP_TOL)
    np.testing.assert_allclose(a["value_loss"], b["value_loss"], atol=2 * LOSS_TOL)
    assert not np.array_equal(a["value_loss"].to_numpy(), b["value_loss"].to_numpy())
    gate = build_gate("esper_lite_baseline")
    pd.testing.assert_frame_equal(gate_decisions(batched, gate=gate),
                                  gate_decisions(serial, gate=gate), check_exact=True)


def test_each_format_has_its_cache_folder_and_names_itself(both_episodes):
    cache, config, batched, serial = both_episodes
    folders = {f.name: json.loads((f / "episode.json").read_text())
               for f in (cache / "episodes").iterdir() if (f / "episode.json").exists()}
    assert set(folders) == {episode_key(config, 1, "cpu"),
                            episode_key(config.replace(forks="serial"), 1, "cpu")}
    assert folders[episode_key(config, 1, "cpu")]["format"] == "episode-v2"
    assert folders[episode_key(config, 1, "cpu")]["forks"] == "batched"
    assert folders[episode_key(config.replace(forks="serial"), 1, "cpu")]["format"] == \
        "episode-v1"
    # each is served from its own folder: the cached batched episode is the batched one
    again = run_episode(config, replicate=1, cache_dir=cache)
    assert again.timings.loaded
    pd.testing.assert_frame_equal(again.seeds, batched.seeds)


def test_validate_says_how_each_workload_measures_value(capsys, tmp_path):
    from pathlib import Path

    from esper_ab.cli import main

    spaces = Path(__file__).resolve().parents[2] / "search_spaces"
    space = tmp_path / "serial.yaml"
    space.write_text((spaces / "g2_fairness_cnn.yaml").read_text().replace(
        "  - name: synthetic-cnn\n", "  - name: synthetic-cnn\n    episode: {forks: serial}\n"))
    lines = {}
    for name, path in (("cnn", spaces / "g2_fairness_cnn.yaml"),
                       ("seq", spaces / "g2_fairness_transformer.yaml"), ("serial", space)):
        assert main(["validate", str(path)]) == 0
        (lines[name],) = [x for x in capsys.readouterr().out.splitlines() if "workload(s):" in x]
    assert "(value forks together, episode format episode-v2)" in lines["cnn"]
    assert "(value forks one at a time, episode format episode-v1)" in lines["seq"]
    assert "(value forks one at a time, episode format episode-v1)" in lines["serial"]
