"""Ray core and Optuna for sweeps (no ``ray.tune`` here): start or join Ray, warm workers,
pick the trial device, record the traces in a Ray task, the state file. (The Optuna sampler
and its persistent storage are in ``esper_ab.sweeps.studies``, Ray-free.)

Ray is embedded and local by default (``address="local"``); an address joins a cluster.
Token authentication is handled as ``esper_ab.sweeps.auth`` describes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ray

from esper_ab.errors import ConfigError
from esper_ab.replay import evidence_for_spec
from esper_ab.sweeps.auth import AUTH_HINT, auth_mode
from esper_ab.sweeps.spec import SweepSpec
from esper_ab.trial import Evidence

__all__ = ["connect_ray", "device_for_trial", "evidence_for_sweep", "read_state", "warm_worker",
           "write_state"]


def connect_ray(address: str | None, *, num_cpus: int | None = None,
                setup_hook: str = "esper_ab.sweeps.runtime.warm_worker") -> bool:
    """Start or join Ray; True when this call started it (and so should shut it down).

    ``setup_hook`` names the function each embedded worker runs first (the Tune runner passes
    its own, which also imports ``ray.tune``; recording workers never do)."""
    if ray.is_initialized():
        return False
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Ray prestarts worker processes at init; the setup hook makes them import the trial
        # stack (scipy, pandas, statistics, replay) while the driver prepares the sweep, so
        # the first trial on each worker does not pay for it.
        # address="local": always a new embedded instance, never a cluster that some
        # `ray start` on this machine advertised in /tmp/ray/ray_current_cluster.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False,
                 logging_level="ERROR",
                 runtime_env={"worker_process_setup_hook": setup_hook})
        return True
    auth_mode()
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"--address={address!r} could not be joined ({first}): check the "
                          f"address; {AUTH_HINT}") from None
    return True


def warm_worker() -> None:
    """Ray worker setup hook: import what every trial needs, once per worker process."""
    import esper_ab.replay  # noqa: F401
    import esper_ab.stats  # noqa: F401
    import esper_ab.trial  # noqa: F401


def device_for_trial() -> tuple[str, str]:
    gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        return "cpu", "no GPU assigned"
    import torch

    if torch.cuda.is_available():
        return "cuda", f"GPU {gpu_ids}"
    return "cpu", f"GPU {gpu_ids} assigned but CUDA is unavailable: CPU fallback"


def read_state(folder: Path) -> dict[str, Any]:
    f = folder / "state.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def write_state(folder: Path, **state: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps({**read_state(folder), **state}, indent=1))
    tmp.replace(folder / "state.json")


def _record_task(spec: SweepSpec, cache_dir: str) -> Evidence:
    """Ray task: record (or load) the sweep's traces where the trial resources are (on a GPU
    when one is assigned and CUDA sees it)."""
    device, _ = device_for_trial()
    return evidence_for_spec(spec, cache_dir=cache_dir, device=device)


def evidence_for_sweep(spec: SweepSpec, *, cache_dir: Path) -> Evidence:
    """The traces every trial replays: recorded once, before the Tuner starts."""
    if spec.traces.source != "record":
        return evidence_for_spec(spec, cache_dir=cache_dir)
    task = ray.remote(_record_task).options(num_cpus=spec.resources.cpu,
                                            num_gpus=spec.resources.gpu)
    return ray.get(task.remote(spec, str(cache_dir)))
