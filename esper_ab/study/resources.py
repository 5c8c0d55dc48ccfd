"""What a space's ``resources`` become on the cluster it runs on (Ray-free, pure).

``plan_resources(resources, max_concurrent, nodes)`` turns the space's request into the
numbers every trial, recording task and closed-loop task asks Ray for:

- ``gpu: auto`` with a measured throughput (``benchmarks/gpu_throughput.py --save`` writes
  it; ``$ESPER_AB_GPU_THROUGHPUT`` or ``.esper_ab_cache/gpu_throughput.json``): the plan with
  the most episodes per minute among CPU only and ``n`` episodes per GPU for every measured
  ``n`` (a share of ``1/n``), counting the CPUs each task also takes. The GPU is chosen only
  when its estimate beats CPU only, so the plan is never slower than CPU only on the
  measured figures (:func:`throughput_plan`; the description says why).
- ``gpu: auto`` with no measurement: when the cluster has GPUs, each task gets
  ``1 / ceil(max_concurrent / G)`` of a GPU (G = the GPUs of the largest GPU node, rounded
  down to Ray's 1e-4 precision): the ``max_concurrent`` trials that run at once share the
  GPUs evenly (one GPU and ``max_concurrent: 4`` -> 0.25 each; 2 GPUs and 2 trials -> 1.0
  each). Without a GPU, tasks run on the CPU (``gpu 0``).
- an explicit ``gpu: 0.25`` (or any number > 0) on a cluster where no node has that much GPU
  fails at once with :class:`ResourceError` (it could never be scheduled); so does a ``cpu``
  request larger than every node.

``nodes`` is a list of per-node resource dicts as Ray names them (``{"CPU": 2.0, "GPU": 1.0}``):
``esper_ab.study.runtime.cluster_nodes()`` reads them from a running Ray, :func:`local_nodes`
detects this machine's without starting Ray (``esper-ab validate``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esper_ab.errors import ConfigError, EsperABError

__all__ = ["THROUGHPUT_ENV", "ResourceError", "ResourcePlan", "ScheduleTimeout", "Throughput",
           "auto_gpu_fraction", "describe_cluster", "load_throughput", "local_nodes",
           "local_plan", "plan_resources", "throughput_plan"]

THROUGHPUT_ENV = "ESPER_AB_GPU_THROUGHPUT"
DEFAULT_THROUGHPUT = Path(".esper_ab_cache") / "gpu_throughput.json"

Node = Mapping[str, float]


class ResourceError(ConfigError):
    """The space asks for resources that no node of the cluster has."""


class ScheduleTimeout(EsperABError, RuntimeError):
    """A Ray task or Tune trial could not be scheduled within the schedule timeout."""


@dataclass(frozen=True)
class ResourcePlan:
    cpu: float                  # per task / trial
    gpu: float                  # per task / trial (0: CPU only)
    requested: str              # the space's gpu value: "auto", "0", "0.25", ...
    cluster: str                # e.g. "local Ray: 2 CPUs, 0 GPUs, 1 node"
    reason: str = ""            # why, when the plan came from a measured throughput

    @property
    def device(self) -> str:
        return "cuda" if self.gpu > 0 else "cpu"

    def tag(self) -> str:
        """The value of the ``esper_ab.resources`` tag of the sweep's parent run."""
        return f"cpu={self.cpu:g} gpu={self.gpu:g} (gpu: {self.requested}; {self.cluster})"

    def describe(self) -> str:
        """One line: what each trial gets, and why."""
        what = (f"{self.cpu:g} CPU + {self.gpu:g} GPU per trial/task" if self.gpu > 0
                else f"{self.cpu:g} CPU per trial/task, no GPU")
        if self.reason:
            why = self.reason
        elif self.requested == "auto":
            why = ("gpu: auto and the cluster has GPUs: the concurrent trials share them "
                   "(no measured throughput: benchmarks/gpu_throughput.py --save plans "
                   "from one)"
                   if self.gpu > 0 else "gpu: auto and the cluster has no GPU: CPU only")
        else:
            why = f"gpu: {self.requested} as the space says"
        return f"resources: {what} ({why}; {self.cluster})"


@dataclass(frozen=True)
class Throughput:
    """Episodes per minute measured on one GPU machine: ``cpu_per_process`` for one
    single-threaded CPU process while the CPUs are all busy, and ``gpu[n]`` for one GPU
    shared by ``n`` concurrent episodes (``benchmarks/gpu_throughput.py --save``)."""

    cpu_per_process: float
    gpu: Mapping[int, float] = field(default_factory=dict)
    machine: str = ""

    def to_json(self) -> str:
        return json.dumps({"cpu_per_process": self.cpu_per_process, "machine": self.machine,
                           "gpu": {str(n): r for n, r in sorted(self.gpu.items())}}, indent=2)


def load_throughput(path: str | Path | None = None) -> Throughput | None:
    """The measured throughput at ``path`` (default ``$ESPER_AB_GPU_THROUGHPUT``, else
    ``.esper_ab_cache/gpu_throughput.json``); None when there is no such file."""
    where = Path(path or os.environ.get(THROUGHPUT_ENV) or DEFAULT_THROUGHPUT)
    if not where.is_file():
        return None
    try:
        data = json.loads(where.read_text())
        gpu = {int(n): float(r) for n, r in data.get("gpu", {}).items()}
        tp = Throughput(float(data["cpu_per_process"]), gpu, str(data.get("machine", "")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"GPU throughput file {where} is not valid ({exc}): rerun "
                          "benchmarks/gpu_throughput.py --save, or delete it") from None
    if not (tp.cpu_per_process > 0 and all(n >= 1 and r > 0 for n, r in tp.gpu.items())):
        raise ConfigError(f"GPU throughput file {where} has a non-positive rate or share: "
                          "rerun benchmarks/gpu_throughput.py --save, or delete it")
    return tp


def throughput_plan(max_concurrent: int, cpu_per_task: float, node_cpus: float, gpus: float,
                    tp: Throughput) -> tuple[float, str]:
    """(GPU share per task, why) of the fastest plan on one node's measured throughput.

    CPU only runs ``m = min(max_concurrent, node_cpus / cpu_per_task)`` tasks at
    ``cpu_per_process`` each. ``n`` tasks per GPU run ``c = min(m, G n)`` at once, each at
    ``gpu[n] / n`` (a lower bound when ``c < G n``: fewer episodes share a GPU). A GPU plan
    is kept only when it beats CPU only."""
    slots = max(1, int(math.floor(node_cpus / max(cpu_per_task, 1e-9) + 1e-9)))
    m = max(1, min(max_concurrent, slots))
    cpu_rate = m * tp.cpu_per_process
    whole = int(math.floor(gpus + 1e-9))
    best_rate, best_share, best = cpu_rate, 0.0, f"CPU only ({m} at once)"
    for n, rate in sorted(tp.gpu.items()):
        if whole < 1:
            break
        c = min(m, whole * n)
        estimate = c * rate / n
        if estimate > best_rate * (1 + 1e-9):
            best_rate, best_share = estimate, math.floor(1e4 / n) / 1e4
            best = f"{n} per GPU ({c} at once)"
    options = ", ".join([f"CPU only {cpu_rate:.1f}/min"]
                        + [f"{n} per GPU {min(m, whole * n) * r / n:.1f}/min"
                           for n, r in sorted(tp.gpu.items()) if whole >= 1])
    machine = f" on {tp.machine}" if tp.machine else ""
    return best_share, (f"gpu: auto from measured episodes/min{machine}: {options}; "
                        f"chose {best}, {best_rate:.1f}/min")


def auto_gpu_fraction(max_concurrent: int, gpus_per_node: float) -> float:
    """The GPU share of one trial under ``gpu: auto`` (0 without GPUs)."""
    whole = int(math.floor(gpus_per_node + 1e-9))
    if whole < 1:
        return 0.0
    per_gpu = math.ceil(max(1, max_concurrent) / whole)   # trials sharing one GPU
    return math.floor(1e4 / per_gpu) / 1e4


def _fmt(n: float) -> str:
    return f"{n:g}"


def describe_cluster(nodes: Sequence[Node], where: str) -> str:
    cpus = sum(float(n.get("CPU", 0)) for n in nodes)
    gpus = sum(float(n.get("GPU", 0)) for n in nodes)
    return (f"{where}: {_fmt(cpus)} CPUs, {_fmt(gpus)} GPUs, "
            f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}")


def plan_resources(resources: Any, max_concurrent: int, nodes: Sequence[Node], *,
                   where: str = "cluster",
                   throughput: Throughput | None | str = "measured") -> ResourcePlan:
    """The per-task resources on these ``nodes``; ``ResourceError`` if none could hold one.
    ``throughput``: the measured episodes/min for ``gpu: auto`` (``"measured"``: read by
    :func:`load_throughput` when the cluster has a GPU; None: plan without one)."""
    cluster = describe_cluster(nodes, where)
    max_cpu = max((float(n.get("CPU", 0)) for n in nodes), default=0.0)
    max_gpu = max((float(n.get("GPU", 0)) for n in nodes), default=0.0)
    cpu = float(resources.cpu)
    reason = ""
    if resources.gpu == "auto":
        tp = (load_throughput() if throughput == "measured" and max_gpu >= 1 else
              throughput if isinstance(throughput, Throughput) else None)
        if tp is not None and max_gpu >= 1:
            gpu_node = max(nodes, key=lambda n: (float(n.get("GPU", 0)), float(n.get("CPU", 0))))
            gpu, reason = throughput_plan(max_concurrent, float(resources.cpu),
                                          float(gpu_node.get("CPU", 0)), max_gpu, tp)
        else:
            gpu = auto_gpu_fraction(max_concurrent, max_gpu)
        requested = "auto"
    else:
        gpu, requested = float(resources.gpu), _fmt(float(resources.gpu))
    fits = [n for n in nodes if float(n.get("CPU", 0)) >= cpu - 1e-9
            and float(n.get("GPU", 0)) >= gpu - 1e-9]
    if gpu > 0 and max_gpu < gpu - 1e-9:
        have = "no node has a GPU" if max_gpu == 0 else \
            f"no node has {_fmt(gpu)} GPU(s) (at most {_fmt(max_gpu)})"
        raise ResourceError(f"resources.gpu={requested} cannot be scheduled: {have} "
                            f"({cluster}): set resources.gpu: auto (or 0) in the space, or "
                            "join a cluster with GPUs (--address)")
    if not fits:
        raise ResourceError(f"resources.cpu={_fmt(cpu)}"
                            f"{f' with gpu={_fmt(gpu)}' if gpu > 0 else ''} cannot be "
                            f"scheduled: no node has that much (largest: {_fmt(max_cpu)} "
                            f"CPUs; {cluster}): lower resources.cpu in the space, or join a "
                            "larger cluster (--address)")
    return ResourcePlan(cpu=cpu, gpu=gpu, requested=requested, cluster=cluster, reason=reason)


def local_nodes(num_cpus: int | None = None) -> list[dict[str, float]]:
    """This machine as local Ray would see it, without starting Ray: the CPUs this process
    may use, and the GPUs torch sees (``CUDA_VISIBLE_DEVICES`` respected)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        cpus = os.cpu_count() or 1
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch/CUDA: no GPU
        gpus = 0
    node: dict[str, float] = {"CPU": float(num_cpus or cpus)}
    if gpus:
        node["GPU"] = float(gpus)
    return [node]


def local_plan(resources: Any, max_concurrent: int, address: str | None = None, *,
               num_cpus: int | None = None) -> ResourcePlan | None:
    """The plan on embedded local Ray, checked before Ray starts (``ResourceError`` at once
    for a request this machine cannot hold); None when a cluster would be joined
    (``address`` or ``RAY_ADDRESS``): only the cluster can answer then."""
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return None
    return plan_resources(resources, max_concurrent, local_nodes(num_cpus),
                          where="local Ray on this machine")
