"""Optuna studies of sweeps, Ray-free: the sampler, the persistent storage, the sweep folder.

Both ways of searching a space share this module: the Ray Tune sweep
(``esper_ab.tune_driver.tune_runner``, through ``OptunaSearch``) and the in-process replay search (``esper_ab.study.replay_search``).
Studies persist in a journal file in the sweep's folder, next to the MLflow store
(``<store dir>/esper_ab_sweeps/<sweep name>/``). Each sweep run has a study of its own,
``<sweep name>-<parent run id>`` (:func:`sweep_study_name`): a new sweep starts from an empty
history and its seeded sampler, so the same space and seed give the same trials; only
``--resume`` continues a study (the replay search uses ``<name>-replay``, so that the two
fidelities never share a history).

``Lockstep`` makes a seeded sampler's draws independent of the order in which concurrent
trials end: configs are asked in rounds of ``max_concurrent``, a round starts only once the
study knows every trial of the previous one, and an end within a round that is still being
asked is told once the round is full. The Tune path with a trial per config
(``resume.DurableSearch``) uses it. ``Pipeline`` gives batched trials
(``tune_driver.batches.BatchPlanner``) the same independence without rounds: the i-th batch
asked sees exactly the batches up to i - ``max_concurrent`` told, so a slot asks its next
batch as soon as its own has ended, while the others still run (no round's barrier, and
only one slot waits for each batch's asks).

``BatchedJournalBackend`` buffers journal writes and appends them with one ``fsync`` per
``flush()``: the plain file backend pays one ``fsync`` per operation (about 5 ms per trial,
measured), which would dominate a search that evaluates a config in a few milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from esper_ab.errors import ConfigError
from esper_ab.study._journal import recover_torn_tail

__all__ = ["REPLAY_JOURNAL", "SWEEP_JOURNAL", "BatchedJournalBackend", "Lockstep", "Pipeline",
           "SweepFolderLock",
           "optuna_directions", "optuna_sampler", "optuna_storage", "store_dir", "sweep_dir_for",
           "sweep_study_name"]

SWEEP_JOURNAL = "optuna.journal"
REPLAY_JOURNAL = "optuna-replay.journal"


def store_dir(uri: str) -> Path | None:
    """The directory of an embedded sqlite store (None for a server)."""
    return Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else None


def sweep_dir_for(spec: Any, tracking_uri: str, storage_dir: str | None) -> Path:
    """The folder of a sweep's state: ``<storage_dir>/<name>``, or
    ``<dir of the sqlite store (else cwd)>/esper_ab_sweeps/<name>``."""
    root = Path(storage_dir) if storage_dir else (store_dir(tracking_uri) or Path.cwd())
    return (root if storage_dir else root / "esper_ab_sweeps") / spec.name


def sweep_study_name(name: str, sweep_run: str) -> str:
    """The Optuna study of one sweep run: a new sweep never inherits an earlier sweep's
    trials (``--resume`` reopens the run, hence the same study)."""
    return f"{name}-{sweep_run}"


class Lockstep:
    """Rounds of asks, so that a seeded sampler draws the same configs however trials end.

    ``total`` configs are asked in rounds of ``width``. :meth:`may_ask` is False while the
    previous round has a trial the study has not been told of; :meth:`ended` holds the end
    of a trial whose round is still being asked (the next ask of that round would see it)
    and returns the ends that may be told now; :meth:`asked` returns the held ends once its
    round is full. Thread-safe: ends arrive from a writer thread, asks from the driver.
    """

    def __init__(self, width: int, total: int) -> None:
        self.width, self.left = max(1, int(width)), max(0, int(total))
        self._round: list[Hashable] = []
        self._size = min(self.width, self.left)
        self._told: set[Hashable] = set()
        self._held: list[Hashable] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:    # Tune pickles its searcher
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _full(self) -> bool:
        return len(self._round) >= self._size

    def may_ask(self) -> bool:
        with self._lock:
            if not self._full():
                return True
            if any(k not in self._told for k in self._round) or self.left <= 0:
                return False
            self._round, self._size = [], min(self.width, self.left)
            return self._size > 0

    def asked(self, key: Hashable) -> list[Hashable]:
        with self._lock:
            self._round.append(key)
            self.left -= 1
            if not self._full():
                return []
            held, self._held = self._held, []
            return held

    def ended(self, key: Hashable) -> list[Hashable]:
        with self._lock:
            if key in self._round and not self._full():
                self._held.append(key)
                return []
            return [key]

    def told(self, key: Hashable) -> None:
        with self._lock:
            self._told.add(key)


class Pipeline:
    """Asks in a pipeline ``width`` deep, so that a seeded sampler draws the same configs
    however trials end, without rounds.

    The i-th key asked (of ``total``) sees exactly keys 0 .. i - ``width`` told: :meth:`may_ask`
    is False until they are, and :meth:`ended` holds the end of key j until key
    j + ``width`` - 1 has been asked (that ask must not see it), returning the ends that may
    be told now; :meth:`asked` returns the held ends its ask releases. With ``width`` slots
    each slot asks its next key when its own has ended, while the other ``width - 1`` run.
    The same interface as ``Lockstep``; thread-safe.
    """

    def __init__(self, width: int, total: int) -> None:
        self.width, self.left = max(1, int(width)), max(0, int(total))
        self._index: dict[Hashable, int] = {}     # key -> its place in the ask order
        self._told: set[int] = set()
        self._prefix = 0                          # keys 0 .. _prefix - 1 are all told
        self._held: list[Hashable] = []
        self._lock = threading.Lock()

    __getstate__ = Lockstep.__getstate__
    __setstate__ = Lockstep.__setstate__

    def may_ask(self) -> bool:
        with self._lock:
            return self.left > 0 and self._prefix >= len(self._index) - self.width + 1

    def _may_tell(self, key: Hashable) -> bool:
        j = self._index.get(key)
        return j is None or self.left <= 0 or len(self._index) >= j + self.width

    def asked(self, key: Hashable) -> list[Hashable]:
        with self._lock:
            self._index[key] = len(self._index)
            self.left -= 1
            free = [k for k in self._held if self._may_tell(k)]
            self._held = [k for k in self._held if k not in free]
            return free

    def ended(self, key: Hashable) -> list[Hashable]:
        with self._lock:
            if self._may_tell(key):
                return [key]
            self._held.append(key)
            return []

    def told(self, key: Hashable) -> None:
        with self._lock:
            if key in self._index:
                self._told.add(self._index[key])
            while self._prefix in self._told:
                self._prefix += 1


def optuna_sampler(spec: Any) -> Any:
    """The spec's sampler (``grid`` is a random sampler over enqueued grid points)."""
    import optuna

    s = spec.sampler
    if s.kind == "tpe":
        extra = {} if s.n_startup_trials is None else {"n_startup_trials": s.n_startup_trials}
        return optuna.samplers.TPESampler(seed=s.seed, **extra)
    if s.kind == "nsga2":
        extra = {} if s.population_size is None else {"population_size": s.population_size}
        from esper_ab.study._samplers import PicklableNSGAIISampler  # Tune pickles it

        return PicklableNSGAIISampler(seed=s.seed, **extra)
    return optuna.samplers.RandomSampler(seed=s.seed)   # random, and grid via enqueued points


def optuna_directions(spec: Any) -> list[str]:
    return ["minimize" if o.direction == "min" else "maximize" for o in spec.objectives]


def optuna_storage(spec: Any, folder: Path, *, study_name: str | None = None,
                   journal: str = SWEEP_JOURNAL, backend: Any | None = None) -> Any:
    """A journal storage in ``folder`` (checked: an existing study of that name must have the
    spec's directions). ``backend`` replaces the plain file backend (e.g. a batched one)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    name = study_name or spec.name
    folder.mkdir(parents=True, exist_ok=True)
    recover_torn_tail(folder / journal)     # a crash's torn last record, moved aside
    storage = optuna.storages.JournalStorage(
        backend or JournalFileBackend(str(folder / journal)))
    want = optuna_directions(spec)
    for summary in storage.get_all_studies():
        if summary.study_name == name:
            have = [d.name.lower() for d in summary.directions]
            if have != want:
                raise ConfigError(f"sweep {spec.name!r}: its Optuna study {name!r} in {folder} "
                                  f"has directions {have} but the spec asks for {want}: rename "
                                  f"the sweep, or delete {journal} to start the study afresh")
    return storage


class BatchedJournalBackend:
    """A journal file backend whose writes are buffered until ``flush()``.

    Reads see the file's logs followed by the buffered ones, so the ``JournalStorage`` on top
    behaves as if every write had landed. Only safe with a single writer: hold a
    ``SweepFolderLock`` while using it (log numbers are positions in the file).
    """

    def __init__(self, path: str | Path) -> None:
        from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

        BaseJournalBackend.register(BatchedJournalBackend)   # a virtual subclass
        recover_torn_tail(path)                 # a crash's torn last record, moved aside
        self._inner = JournalFileBackend(str(path))
        self._n_written = sum(1 for _ in self._inner.read_logs(0))
        self._pending: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if log_number_from < self._n_written:
            out = list(self._inner.read_logs(log_number_from))
        return out + self._pending[max(0, log_number_from - self._n_written):]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._pending.extend(logs)

    def flush(self) -> None:
        """Append the buffered logs to the file (one write, one fsync)."""
        if self._pending:
            self._inner.append_logs(self._pending)
            self._n_written += len(self._pending)
            self._pending = []


class SweepFolderLock:
    """An exclusive, non-blocking lock on ``<folder>/<name>.lock`` (``filelock``: released
    on exit, and by the OS if the process dies)."""

    def __init__(self, folder: Path, name: str, *, what: str) -> None:
        self.path, self.what = Path(folder) / f"{name}.lock", what
        self._lock = FileLock(str(self.path), timeout=0, is_singleton=False)

    def __enter__(self) -> SweepFolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise ConfigError(f"{self.what} is already running ({self.path} is locked): wait "
                              "for it to finish, or use another --storage-dir") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()
