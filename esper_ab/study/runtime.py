"""Ray core and Optuna for sweeps (no ``ray.tune`` here): start or join Ray, warm workers,
pick the trial device, record the traces in a Ray task, the state file. (The Optuna sampler
and its persistent storage are in ``esper_ab.study.studies``, Ray-free.)

Ray is embedded and local by default (``address="local"``); an address joins a cluster.
Token authentication is handled as ``esper_ab.study.auth`` describes.

Never hang on scheduling: ``plan_for_cluster`` compares the space's resources with the
cluster's nodes before anything is submitted (``ResourceError`` when no node could ever run
a task), and ``ensure_schedulable`` asks Ray to reserve one task's resources (a placement group)
and fails with ``ScheduleTimeout`` (naming the missing resource) when they are not
reserved within the schedule timeout; ``ScheduleWatch`` applies the same timeout to Tune's
trials.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from esper_ab.errors import ConfigError, shown
from esper_ab.study._reaper import TAG_VAR, Watchdog, helper_processes, set_owner_tag
from esper_ab.study.auth import AUTH_HINT, auth_mode, claim_token, token_path
from esper_ab.study.lifecycle import read_state, write_state
from esper_ab.study.preflight import check_ray_address
from esper_ab.study.resources import (
    ResourcePlan,
    ScheduleTimeout,
    describe_cluster,
    plan_resources,
)
from esper_ab.study.spec import SweepSpec

__all__ = ["DEFAULT_SCHEDULE_TIMEOUT_S", "LOOPBACK", "ScheduleWatch", "close_watchdog",
           "embedded_ray_started",
           "cluster_nodes", "connect_ray", "embedded_helpers", "shutdown_ray",
           "device_for_trial", "ensure_schedulable", "finite_number", "plan_for_cluster",
           "quiet_tune_console", "read_state", "shortfall", "trial_dirname",
           "trial_error_line", "warm_worker",
           "with_plan", "write_state"]

DEFAULT_SCHEDULE_TIMEOUT_S = 60.0


def connect_ray(address: str | None, *, num_cpus: int | None = None,
                setup_hook: str = "esper_ab.study.runtime.warm_worker",
                verbose: int = 0) -> bool:
    """Start or join Ray; True when this call started it (and so should shut it down).

    ``setup_hook`` names the function each embedded worker runs first (the Tune runner passes
    its own, which also imports ``ray.tune``; recording workers never do).

    An embedded Ray binds every port it opens to the loopback interface (gRPC, metrics,
    agents; no dashboard), gets a watchdog that stops its helper processes when this driver
    dies (``esper_ab.study._reaper``), and leaves the token file Ray writes readable by its
    owner only (0600). A cluster address is probed (TCP, a few seconds) before ``ray.init``.
    Ray's own output is kept to errors unless ``verbose`` (then: its info log and the
    workers' output); scheduling problems are reported by ``plan_for_cluster`` and
    ``ensure_schedulable``, not by Ray's warnings.
    """
    global _watchdog
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": verbose > 0, "logging_level": "INFO" if verbose else "ERROR"}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Ray prestarts worker processes at init; the setup hook makes them import the trial
        # stack (scipy, pandas, statistics, replay) while the driver prepares the sweep, so
        # the first trial on each worker does not pay for it.
        # address="local": always a new embedded instance, never a cluster that some
        # `ray start` on this machine advertised in /tmp/ray/ray_current_cluster.
        close_watchdog()
        claim_token()     # one token for Rays starting at once (auth.claim_token)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        _start_local(num_cpus=num_cpus, setup_hook=setup_hook, quiet=quiet, tag=tag)
        set_owner_tag(tag)
        _watchdog = Watchdog(helper_processes(), tag=tag)
        _private_token_file()
        _STARTED.append(True)
        return True
    auth_mode()
    check_ray_address(address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"--address={shown(address)} could not be joined ({first}): check the "
                          f"address; {AUTH_HINT}") from None
    return True


LOOPBACK = "127.0.0.1"
_watchdog: Watchdog | None = None
_STARTED: list[bool] = []
START_ATTEMPTS = 3


def _start_local(*, num_cpus: int | None, setup_hook: str, quiet: dict[str, Any],
                 tag: str) -> None:
    """``ray.init`` of the embedded Ray, loopback only. Ray gives its raylet a fixed 30 s to
    register; on a saturated machine that fails now and then, so it is tried again (after a
    shutdown of what the failed start left); a last failure is one line."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            with _loopback_only(), _env(TAG_VAR, tag):   # the helpers inherit the tag
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet,
                         _node_ip_address=LOOPBACK,
                         runtime_env={"worker_process_setup_hook": setup_hook})
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception here
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == START_ATTEMPTS:
                first = " ".join(str(exc).split())[:300]
                raise ConfigError(f"the embedded Ray did not start ({first}) after {attempt} "
                                  "attempt(s): free some CPU or memory and retry, or join a "
                                  "running cluster with --address") from None


@contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray resolves a loopback node address to the machine's external IP, and then binds
    its servers to every interface, unless clusters are switched off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read by ``services.get_node_ip_address``):
    then the GCS, raylet, agents, metrics exporter and workers all bind to 127.0.0.1. Set for
    the embedded start only (the helpers inherit the environment), restored after."""
    from ray._private import ray_constants

    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    before_env, before_flag = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before_env


def _private_token_file() -> None:
    """Ray writes ``~/.ray/auth_token`` world-readable (0644, measured): make it 0600."""
    path = token_path()
    try:
        if path.is_file() and path.stat().st_uid == os.getuid() and \
                path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass


def embedded_helpers() -> list[Any]:
    """The helper processes of the embedded Ray this process started (psutil.Process)."""
    return helper_processes() if _watchdog is not None else []


def embedded_ray_started() -> bool:
    """Whether this process started an embedded Ray at some point (the CLI then ends with
    ``os._exit``: Ray's C++ teardown at interpreter exit was measured at 10-12 s after a
    finished ``ray.shutdown``, which would make a Ctrl-C take that long)."""
    return bool(_STARTED)


def close_watchdog() -> None:
    """After ``ray.shutdown()``: let the watchdog stop any helper left, and exit."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.close()
        _watchdog = None


def shutdown_ray() -> None:
    """``ray.shutdown()``, then the watchdog's last check."""
    ray.shutdown()
    close_watchdog()


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


def trial_dirname(trial: Any) -> str:
    """A Tune trial's folder name: ``trial_<trial id>``."""
    return f"trial_{trial.trial_id}"


def finite_number(v: Any) -> bool:
    """``v`` is an int or a float, and finite (a metric in Tune's result may be anything)."""
    return isinstance(v, int | float) and math.isfinite(v)


def trial_error_line(trial: Any) -> str:
    """The last line of a Tune trial's latest error (its local error file, else storage)."""
    text = ""
    try:
        local = getattr(trial, "error_file", None)
        if local and Path(local).is_file():
            text = Path(local).read_text(errors="replace")
        else:
            text = str(trial.get_error() or "")
    except Exception:  # noqa: BLE001 - best effort: the error file may be gone
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown error")[:500]


def quiet_tune_console(verbose: int) -> Callable[[], None]:
    """At ``verbose`` 0, no Tune console output: its new output engine prints an experiment
    box even at verbose=0, the legacy one prints nothing (``RAY_AIR_NEW_OUTPUT=0``). Returns
    the function that restores the environment."""
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if verbose > 0:
        return lambda: None
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"

    def restore() -> None:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before
    return restore


# -- resources and scheduling --------------------------------------------------------------
def cluster_nodes() -> list[dict[str, float]]:
    """The resources of every alive node of the connected Ray cluster."""
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def plan_for_cluster(spec: SweepSpec, address: str | None = None) -> ResourcePlan:
    """The space's resources on the connected cluster (``ResourceError`` if infeasible);
    ``address`` as given to ``connect_ray`` (it only names the cluster in messages)."""
    joined = address or os.environ.get("RAY_ADDRESS")
    label = f"Ray cluster {joined}" if joined else "local Ray"
    return plan_resources(spec.resources, spec.max_concurrent, cluster_nodes(), where=label)


def with_plan(spec: SweepSpec, plan: ResourcePlan) -> SweepSpec:
    """``spec`` with its resources resolved (``gpu: auto`` replaced by the plan's share), for
    the code that reads ``spec.resources`` directly (closed-loop tasks). Its hash changes:
    keep the original spec for anything that compares hashes (resume)."""
    return spec.model_copy(update={"resources": spec.resources.model_copy(
        update={"cpu": plan.cpu, "gpu": plan.gpu})})


def shortfall(plan: ResourcePlan) -> str:
    """What is missing for one more task of ``plan`` right now (for a timeout message)."""
    free = ray.available_resources()
    total = describe_cluster(cluster_nodes(), "Ray cluster")
    missing = [f"{k} (needs {need:g}, {float(free.get(k, 0.0)):g} free)"
               for k, need in (("CPU", plan.cpu), ("GPU", plan.gpu))
               if need > 0 and float(free.get(k, 0.0)) < need - 1e-9]
    return f"{', '.join(missing) or 'resources held by other work'} ({total})"


def _pending_groups() -> int:
    """Placement groups of this job that Ray could not place yet (Tune asks one per trial;
    a group's id ends with its job's id)."""
    from ray.util import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    pending = [k for k, v in placement_group_table().items() if v.get("state") == "PENDING"]
    mine = [k for k in pending if k.endswith(job)]
    return len(mine if mine or not pending else pending)


class ScheduleWatch:
    """The schedule timeout of Tune trials, and their progress (``search``: finished/total).

    ``step(statuses)`` is called on every Tune loop step with the trials' statuses. While
    trials are PENDING, none is RUNNING and Ray has not placed their placement groups (the
    resources are not there: not a slow worker start), the clock runs; past ``timeout_s``
    it raises ``ScheduleTimeout`` naming what is missing (the sweep fails, its parent run
    ends FAILED with that reason)."""

    def __init__(self, plan: ResourcePlan, *, timeout_s: float, total: int = 0,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.plan, self.timeout_s, self.total, self.progress = plan, timeout_s, total, progress
        self._since: float | None = None       # since when trials wait for resources
        self._checked = 0.0                     # when Ray was last asked
        self._started = False
        self._done: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:   # pickled with Tune's experiment state
        return {**self.__dict__, "progress": None, "_since": None, "_checked": 0.0,
                "_started": False, "_done": set()}

    def step(self, statuses: list[str]) -> None:
        if not self._started:
            self._started = True
            if self.progress is not None:
                self.progress("search", len(self._done), max(self.total, len(self._done)))
        waiting = "PENDING" in statuses and "RUNNING" not in statuses
        if not waiting or self.timeout_s <= 0:
            self._since = None
            return
        now = time.monotonic()
        if now - self._checked < 1.0:    # ask Ray at most once a second
            return
        self._checked = now
        if not _pending_groups():
            self._since = None
            return
        self._since = self._since or now
        if now - self._since > self.timeout_s:
            raise ScheduleTimeout(
                f"no trial could be scheduled within {self.timeout_s:g} s: missing "
                f"{shortfall(self.plan)}: free the cluster, lower resources in the space, "
                "or raise --schedule-timeout")

    def finished(self, trial: Any, trials: list[Any]) -> None:
        """``trial`` ended (``trials``: all of Tune's, some ended before a resume)."""
        self._since = None
        self._done |= {trial.trial_id} | {t.trial_id for t in trials
                                          if t.status in ("TERMINATED", "ERROR")}
        total = max(self.total, len(trials), len(self._done))
        if self.progress is not None:
            self.progress("search", len(self._done), total)


def ensure_schedulable(plan: ResourcePlan, *, what: str,
                       timeout_s: float = DEFAULT_SCHEDULE_TIMEOUT_S) -> None:
    """Fail with ``ScheduleTimeout`` unless Ray can reserve one task's resources (``plan``)
    within ``timeout_s`` seconds (0 or less: do not check). The probe is a placement group
    of one bundle, removed at once: it measures placement, not a worker's start-up."""
    if timeout_s <= 0:
        return
    from ray.util import placement_group, remove_placement_group

    bundle = {"CPU": plan.cpu, **({"GPU": plan.gpu} if plan.gpu > 0 else {})}
    group = placement_group([bundle])
    try:
        placed = group.wait(timeout_seconds=timeout_s)
        missing = "" if placed else shortfall(plan)
    finally:
        remove_placement_group(group)
    if not placed:
        raise ScheduleTimeout(
            f"{what} could not be scheduled within {timeout_s:g} s: missing {missing}: free "
            "the cluster, lower resources in the space, or raise --schedule-timeout")
