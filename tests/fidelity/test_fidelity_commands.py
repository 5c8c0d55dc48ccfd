"""``esper-ab record`` / ``esper-ab replay`` / ``esper-ab sweep`` (fidelity multi): outputs,
resumable recording, and bad input as one stderr line with exit 2."""

from __future__ import annotations

import shutil

import pytest
from fidelity_helpers import write_space

from esper_ab.cli import main


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esper-ab: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("overrides,args,needle", [
    ({}, ["--traces", "/no/such/dir"], "/no/such/dir"),
    ({"replicates": 6}, ["--traces", "TRACES"], "replicate(s) [4, 5]"),
    ({}, ["--traces", "TRACES", "--num-samples", "0"], "--num-samples: 0 is outside"),
    ({}, ["--traces", "TRACES", "--batch-size", "0"], "--batch-size: 0 is outside"),
    ({}, ["--traces", "TRACES", "--finalists", "0"], "--finalists: 0 is outside"),
    ({"sampler": {"kind": "annealing"}}, ["--traces", "TRACES"], "sampler.kind"),
])
def test_replay_bad_input(recorded, tmp_path, capsys, overrides, args, needle):
    path = write_space(tmp_path, **overrides)
    argv = ["replay", str(path), *[str(recorded.traces) if a == "TRACES" else a for a in args],
            "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    assert needle in _err(capsys, argv)


def test_record_and_sweep_bad_input(tmp_path, capsys):
    synthetic = write_space(tmp_path, name="syn", traces={"source": "synthetic"})
    assert "synthetic" in _err(capsys, ["record", str(synthetic)])
    multi = write_space(tmp_path, name="syn_multi", fidelity="multi",
                        replicates={"search": 2, "confirm": 2}, traces={"source": "synthetic"})
    assert "fidelity multi" in _err(capsys, ["sweep", str(multi), "--tracking-uri",
                                             f"sqlite:///{tmp_path}/m.db"])
    recorded_multi = write_space(tmp_path, name="rec_multi", fidelity="multi",
                                 replicates={"search": 2, "confirm": 2},
                                 traces={"source": "record"})
    assert "--resume" in _err(capsys, ["sweep", str(recorded_multi), "--resume"])
    assert "not a file" in _err(capsys, ["record", str(tmp_path / "none.yaml")])
    bad = write_space(tmp_path, name="bad", confirm={"top_k": 0})
    assert "confirm.top_k" in _err(capsys, ["replay", str(bad), "--traces", str(tmp_path)])


def test_replay_prints_the_speed_the_table_and_the_verdict(recorded, tmp_path, capsys):
    path = write_space(tmp_path, name="fid_cli")
    rc = main(["replay", str(path), "--traces", str(recorded.traces), "--num-samples", "80",
               "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--finalists", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "replay search: 80 configs on 3 replicates" in out
    assert "Best configs (replay):" in out and "Verdict:" in out
    assert "mlflow ui --backend-store-uri" in out and "workflowType=machine_learning" in out


@pytest.mark.slow
def test_record_runs_ray_tasks_and_resumes(recorded, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(recorded.cache / "episodes", cache / "episodes")
    shutil.copytree(recorded.cache / "hosts", cache / "hosts")
    from esper_ab.study.recording import _cache_folder, episode_jobs
    from esper_ab.study.spec import load_sweep_spec

    path = write_space(tmp_path, name="fid_rec")
    job = episode_jobs(load_sweep_spec(path))[2]
    shutil.rmtree(_cache_folder(job, cache))                     # one episode to record
    out = tmp_path / "traces"
    argv = ["record", str(path), "--out", str(out), "--cache-dir", str(cache)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "3 episode(s)" in text and "1 recorded" in text and "2 from the cache" in text
    assert sorted(p.name for p in out.glob("*-seeds.parquet")) == [
        f"synthetic-cnn-r{r}-seeds.parquet" for r in (0, 1, 2)]
    import pandas as pd

    fresh = pd.read_parquet(out / "synthetic-cnn-r2-trace.parquet")
    ref = pd.read_parquet(recorded.traces / "synthetic-cnn-r2-trace.parquet")
    pd.testing.assert_frame_equal(fresh, ref)                    # deterministic, same host
    assert main(argv) == 0                                        # resumed: nothing to do
    assert "0 recorded" in capsys.readouterr().out
