"""Resources that fit the cluster (gpu: auto, an explicit GPU request on a CPU-only cluster)
and sweeps that never hang on scheduling (the schedule timeout)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweep_helpers import space, write_space

from esper_ab.study import runtime
from esper_ab.study.resources import (
    ResourceError,
    ScheduleTimeout,
    auto_gpu_fraction,
    local_nodes,
    plan_resources,
)
from esper_ab.study.spec import Resources, load_sweep_spec, parse_sweep_spec

REPO = Path(__file__).resolve().parents[2]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
CLI = [sys.executable, "-m", "esper_ab"]
TUNE_TABLE = re.compile(r"Trial status|Current time:|Logical resource usage|[╭│╰]")
PROGRESS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d search: (\d+)/(\d+) trials",
                      re.MULTILINE)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "OMP_NUM_THREADS": "1", "HOME": os.environ.get("HOME", str(tmp_path))}


# -- the plan: a hand table ---------------------------------------------------------------
@pytest.mark.parametrize("max_concurrent,gpus,expected", [
    (2, 0, 0.0),        # no GPU: the CPU
    (4, 1, 0.25),       # one GPU shared by the 4 trials that run at once
    (2, 1, 0.5),
    (1, 1, 1.0),
    (3, 1, 0.3333),     # 1/3 rounded down to Ray's 1e-4 precision: 3 x 0.3333 fit
    (3, 2, 0.5),        # ceil(3 / 2) = 2 trials per GPU
    (2, 2, 1.0),
    (2, 4, 1.0),        # more GPUs than trials: one each, never more
])
def test_auto_gpu_fraction(max_concurrent, gpus, expected):
    assert auto_gpu_fraction(max_concurrent, gpus) == expected
    if gpus:   # the max_concurrent shares fit on the GPUs
        per_gpu = math.floor(1 / expected + 1e-9)
        assert per_gpu * gpus >= max_concurrent


def test_plan_auto_on_cpu_only_and_gpu_clusters():
    cpu_only = plan_resources(Resources(cpu=1, gpu="auto"), 2, [{"CPU": 2.0}], where="local Ray")
    assert (cpu_only.cpu, cpu_only.gpu, cpu_only.device) == (1.0, 0.0, "cpu")
    assert "gpu: auto" in cpu_only.describe() and "no GPU" in cpu_only.describe()
    assert cpu_only.tag().startswith("cpu=1 gpu=0 (gpu: auto;")
    gpu = plan_resources(Resources(cpu=1, gpu="auto"), 4,
                         [{"CPU": 2.0}, {"CPU": 16.0, "GPU": 1.0}], where="Ray cluster")
    assert (gpu.gpu, gpu.device) == (0.25, "cuda")
    assert "0.25 GPU" in gpu.describe() and "2 nodes" in gpu.cluster


@pytest.mark.parametrize("resources,nodes,needles", [
    ({"cpu": 1, "gpu": 0.25}, [{"CPU": 2.0}], ["resources.gpu=0.25", "no node has a GPU",
                                               "gpu: auto"]),
    ({"cpu": 1, "gpu": 2}, [{"CPU": 8.0, "GPU": 1.0}], ["resources.gpu=2", "at most 1"]),
    ({"cpu": 4, "gpu": 0}, [{"CPU": 2.0}, {"CPU": 2.0}], ["resources.cpu=4", "largest: 2"]),
])
def test_a_request_no_node_can_hold_fails_with_its_fix(resources, nodes, needles):
    with pytest.raises(ResourceError) as err:
        plan_resources(Resources(**resources), 2, nodes, where="local Ray")
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_explicit_requests_that_fit_are_kept():
    plan = plan_resources(Resources(cpu=2, gpu=0.5), 8, [{"CPU": 4.0, "GPU": 1.0}])
    assert (plan.cpu, plan.gpu, plan.requested) == (2.0, 0.5, "0.5")


def test_schema_accepts_auto_and_names_the_fix_otherwise():
    assert Resources(gpu="auto").gpu == "auto" and Resources(gpu=1).gpu == 1.0
    for bad in ("AUTO", "half", -1, True, 1.5):
        data = space(resources={"cpu": 1, "gpu": bad})
        with pytest.raises(Exception) as err:
            parse_sweep_spec(data, source="s.yaml")
        msg = str(err.value)
        assert msg.startswith("s.yaml: resources.gpu=") and "auto" in msg and "\n" not in msg


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_ask_gpu_auto(path):
    if path.stem == "esper_lite_cnn":   # its workload is esper-lite's own network
        pytest.importorskip("esper.kasmina.host", reason="needs esper-lite on the path")
    assert load_sweep_spec(path).resources.gpu == "auto"


# -- the schedule watch (Tune trials), with a fake Ray view ---------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class _Trial:
    def __init__(self, tid: str, status: str) -> None:
        self.trial_id, self.status = tid, status


@pytest.fixture()
def fake_ray(monkeypatch):
    clock = _Clock()
    state = {"pending_groups": 1}
    monkeypatch.setattr(runtime.time, "monotonic", clock)
    monkeypatch.setattr(runtime, "_pending_groups", lambda: state["pending_groups"])
    monkeypatch.setattr(runtime, "shortfall", lambda plan: "GPU (needs 0.25, 0 free)")
    return clock, state


def _watch(timeout_s=60.0, progress=None):
    plan = plan_resources(Resources(cpu=1, gpu=0.25), 4, [{"CPU": 4.0, "GPU": 1.0}])
    return runtime.ScheduleWatch(plan, timeout_s=timeout_s, total=3, progress=progress)


def test_unplaceable_trials_fail_after_the_timeout(fake_ray):
    clock, _ = fake_ray
    watch = _watch()
    watch.step(["PENDING", "PENDING"])
    clock.t += 59
    watch.step(["PENDING", "PENDING"])            # not yet
    clock.t += 2
    with pytest.raises(ScheduleTimeout) as err:
        watch.step(["PENDING", "PENDING"])
    msg = str(err.value)
    assert "within 60 s" in msg and "GPU (needs 0.25" in msg and "--schedule-timeout" in msg


def test_a_slow_worker_start_or_a_running_trial_is_not_a_scheduling_problem(fake_ray):
    clock, state = fake_ray
    watch = _watch()
    state["pending_groups"] = 0                   # resources reserved: actors starting
    for _ in range(5):
        watch.step(["PENDING"])
        clock.t += 100
    state["pending_groups"] = 1
    for _ in range(5):                            # one trial runs, the next waits its turn
        watch.step(["RUNNING", "PENDING"])
        clock.t += 100
    watch.step(["PENDING"])
    clock.t += 30
    watch.step(["PENDING"])                       # the clock restarted: 30 s < 60 s
    off = _watch(timeout_s=0)
    off.step(["PENDING"])
    clock.t += 10_000
    off.step(["PENDING"])                         # 0: wait forever


def test_finished_trials_report_search_progress(fake_ray):
    seen = []
    watch = _watch(progress=lambda *a: seen.append(a))
    trials = [_Trial("a", "TERMINATED"), _Trial("b", "RUNNING"), _Trial("c", "PENDING")]
    watch.step([t.status for t in trials])
    watch.finished(trials[1], trials)
    watch.finished(trials[1], trials)             # the same trial twice counts once
    assert seen == [("search", 0, 3), ("search", 2, 3), ("search", 2, 3)]


def test_local_nodes_sees_this_machine():
    (node,) = local_nodes()
    assert node["CPU"] >= 1 and local_nodes(num_cpus=3)[0]["CPU"] == 3


# -- the CLI on a real local Ray -------------------------------------------------------------
def test_explicit_gpu_on_a_cpu_only_machine_exits_2_before_anything_starts(tmp_path):
    if local_nodes()[0].get("GPU"):
        pytest.skip("this machine has a GPU")
    path = write_space(tmp_path, name="wants_gpu", resources={"cpu": 1, "gpu": 0.25})
    proc = subprocess.run([*CLI, "sweep", str(path)], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=60)   # a guard, not a clock
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "resources.gpu=0.25" in lines[0] and "gpu: auto" in lines[0]
    assert not (tmp_path / "mlflow.db").exists()          # no MLflow run was created
    val = subprocess.run([*CLI, "validate", str(path)], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert val.returncode == 2 and len(val.stderr.strip().splitlines()) == 1
    assert "resources.gpu=0.25" in val.stderr


def test_validate_says_what_gpu_auto_does_here(tmp_path):
    path = write_space(tmp_path, name="auto_res", resources={"cpu": 1, "gpu": "auto"})
    proc = subprocess.run([*CLI, "validate", str(path)], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "resources:" in x and "per trial" in x)
    gpus = local_nodes()[0].get("GPU", 0)
    assert "local Ray on this machine" in line
    assert ("GPU per trial" in line) if gpus else ("no GPU" in line and "CPU only" in line)


@pytest.mark.slow
def test_gpu_auto_sweep_completes_quietly_with_progress_lines(tmp_path):
    """stdout redirected: timestamped progress lines, no Tune table; the choice is printed and
    tagged on the parent run."""
    spec = yaml.safe_load((REPO / "search_spaces" / "synthetic_smoke.yaml").read_text())
    spec.update(replicates=3, num_samples=2, scheduler={"kind": "none"},
                traces={**spec["traces"], "synthetic": {**spec["traces"]["synthetic"],
                                                        "seeds_per_blueprint": 1}})
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run([*CLI, "sweep", str(path), "--tracking-uri", uri, "--n-boot", "50",
                           "--n-perm", "50", "--log-file", str(tmp_path / "log.txt")],
                          cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert not TUNE_TABLE.search(out + proc.stderr), out
    counts = [(int(a), int(b)) for a, b in PROGRESS.findall(out)]
    assert counts[0] == (0, 2) and counts[-1] == (2, 2), out
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d analysis: 4/4 steps", out, re.MULTILINE)
    assert "resources: 1 CPU" in out and "gpu: auto" in out
    assert "--port 5000" in out
    assert "search: 2/2 trials" in (tmp_path / "log.txt").read_text()
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[spec["name"]])
    parent = runs[runs["tags.esper_ab.role"] == "sweep"].iloc[0]
    assert parent["status"] == "FINISHED"
    tag = parent["tags.esper_ab.resources"]
    assert "gpu: auto" in tag and tag.startswith("cpu=1 gpu=")


# -- scheduling timeouts on a real local Ray (2 CPUs) ----------------------------------------
@pytest.fixture()
def all_cpus_held(ray_local):
    """A placement group holding both CPUs of the local Ray: nothing else can be placed."""
    from ray.util import placement_group, remove_placement_group

    group = placement_group([{"CPU": 2}])
    assert group.wait(timeout_seconds=60)
    yield
    remove_placement_group(group)


def test_a_task_that_cannot_be_placed_times_out_naming_the_resource(all_cpus_held):
    plan = plan_resources(Resources(cpu=1, gpu=0), 2, runtime.cluster_nodes())
    with pytest.raises(ScheduleTimeout) as err:
        runtime.ensure_schedulable(plan, what="the recording task", timeout_s=1)
    msg = str(err.value)
    assert msg.startswith("the recording task could not be scheduled within 1 s")
    assert "CPU (needs 1, 0 free)" in msg
    assert runtime._pending_groups() == 0          # the probe is gone


def test_pending_groups_sees_an_unplaceable_request(ray_local):
    from ray.util import placement_group, remove_placement_group

    group = placement_group([{"CPU": 64}])
    try:
        assert not group.wait(timeout_seconds=0.5)
        assert runtime._pending_groups() >= 1
    finally:
        remove_placement_group(group)


def test_a_sweep_that_cannot_schedule_fails_and_its_run_says_why(all_cpus_held, tmp_path):
    import mlflow

    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    spec = parse_sweep_spec(space(name="unschedulable", num_samples=2))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(ScheduleTimeout):
        run_sweep(spec, options=SweepOptions(tracking_uri=uri, storage_dir=str(tmp_path / "s"),
                                             schedule_timeout_s=1))
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["unschedulable"])
    assert list(runs["status"]) == ["FAILED"]
    reason = runs["tags.esper_ab.end_reason"].iloc[0]
    assert "could not be scheduled within 1 s" in reason and "CPU" in reason
