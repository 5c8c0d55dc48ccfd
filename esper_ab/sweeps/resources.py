"""What a space's ``resources`` become on the cluster it runs on (Ray-free, pure).

``plan_resources(resources, max_concurrent, nodes)`` turns the space's request into the
numbers every trial, recording task and closed-loop task asks Ray for:

- ``gpu: auto``: when the cluster has GPUs, each task gets ``1 / ceil(max_concurrent / G)``
  of a GPU (G = the GPUs of the largest GPU node, rounded down to Ray's 1e-4 precision): the
  ``max_concurrent`` trials that run at once share the GPUs evenly (one GPU and
  ``max_concurrent: 4`` -> 0.25 each; 2 GPUs and 2 trials -> 1.0 each). Without a GPU, tasks
  run on the CPU (``gpu 0``).
- an explicit ``gpu: 0.25`` (or any number > 0) on a cluster where no node has that much GPU
  fails at once with :class:`ResourceError` (it could never be scheduled); so does a ``cpu``
  request larger than every node.

``nodes`` is a list of per-node resource dicts as Ray names them (``{"CPU": 2.0, "GPU": 1.0}``):
``esper_ab.sweeps.runtime.cluster_nodes()`` reads them from a running Ray, :func:`local_nodes`
detects this machine's without starting Ray (``esper-ab validate``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from esper_ab.errors import ConfigError, EsperABError

__all__ = ["ResourceError", "ResourcePlan", "ScheduleTimeout", "auto_gpu_fraction",
           "describe_cluster", "local_nodes", "local_plan", "plan_resources"]

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
        if self.requested == "auto":
            why = ("gpu: auto and the cluster has GPUs: the concurrent trials share them"
                   if self.gpu > 0 else "gpu: auto and the cluster has no GPU: CPU only")
        else:
            why = f"gpu: {self.requested} as the space says"
        return f"resources: {what} ({why}; {self.cluster})"


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
                   where: str = "cluster") -> ResourcePlan:
    """The per-task resources on these ``nodes``; ``ResourceError`` if none could hold one."""
    cluster = describe_cluster(nodes, where)
    max_cpu = max((float(n.get("CPU", 0)) for n in nodes), default=0.0)
    max_gpu = max((float(n.get("GPU", 0)) for n in nodes), default=0.0)
    cpu = float(resources.cpu)
    if resources.gpu == "auto":
        gpu, requested = auto_gpu_fraction(max_concurrent, max_gpu), "auto"
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
    return ResourcePlan(cpu=cpu, gpu=gpu, requested=requested, cluster=cluster)


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
