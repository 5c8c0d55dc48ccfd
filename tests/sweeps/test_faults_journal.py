"""A journal that survives a torn write (issue 19, item 2).

A real Optuna journal (``optuna_storage``, the sweeps' storage) is torn the ways a crash
tears it: cut at random byte offsets, given a garbage tail, and written by a process that is
SIGKILLed at random points. Each time the study must open, keep every complete record,
move the torn bytes aside with one note line, and go on: later appends and reads must work
(before the fix, the append after a torn line made every later read fail with a
``JSONDecodeError``). A record damaged in the middle is refused in one line.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from sweep_helpers import write_space

from esper_ab.errors import DataError
from esper_ab.study.spec import load_sweep_spec
from esper_ab.study.studies import SWEEP_JOURNAL, BatchedJournalBackend, optuna_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

WRITER = r"""
import sys, optuna
from esper_ab.study.spec import load_sweep_spec
from esper_ab.study.studies import optuna_storage, optuna_directions
from pathlib import Path
optuna.logging.set_verbosity(optuna.logging.WARNING)
spec = load_sweep_spec(sys.argv[1])
storage = optuna_storage(spec, Path(sys.argv[2]))
study = optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                            directions=optuna_directions(spec))
def objective(trial):
    trial.set_user_attr("pad", "x" * 20_000)   # big writes: more chances to tear one
    return trial.suggest_float("a", 0.0, 1.0)
print("ready", flush=True)
study.optimize(objective, n_trials=100_000)
"""


@pytest.fixture
def spec(tmp_path):
    return load_sweep_spec(write_space(tmp_path, name="t_journal"))


def _study(spec, folder: Path):
    storage = optuna_storage(spec, folder)
    return optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                               directions=["maximize"])


def _run(study, n: int) -> None:
    study.optimize(lambda t: t.suggest_float("a", 0.0, 1.0), n_trials=n)


def _check_whole(spec, folder: Path) -> list:
    """The study reads from a fresh storage, trial numbers 0..n-1, each complete one with
    its value; and one more trial can be appended and read back."""
    study = _study(spec, folder)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))
    _run(study, 1)
    again = _study(spec, folder).get_trials(deepcopy=False)
    assert len(again) == len(trials) + 1 and again[-1].state.name == "COMPLETE"
    return again


@pytest.fixture
def journal(spec, tmp_path):
    folder = tmp_path / "sweep"
    _run(_study(spec, folder), 6)
    return folder, (folder / SWEEP_JOURNAL).read_bytes()


def test_cut_at_random_offsets_the_study_resumes_from_the_last_complete_record(
        spec, journal, capsys):
    folder, whole = journal
    lines = whole.splitlines(keepends=True)
    ends = {sum(len(x) for x in lines[:i]) for i in range(len(lines) + 1)}
    rng = random.Random(19)
    cuts = sorted(rng.sample(range(1, len(whole)), 8))
    for cut in cuts:
        path = folder / SWEEP_JOURNAL
        for old in folder.glob(f"{SWEEP_JOURNAL}.torn-*"):
            old.unlink()
        path.write_bytes(whole[:cut])
        kept = max(e for e in ends if e <= cut)
        _check_whole(spec, folder)
        assert path.read_bytes()[:kept] == whole[:kept]       # every complete record kept
        torn = list(folder.glob(f"{SWEEP_JOURNAL}.torn-*"))
        err = capsys.readouterr().err.strip().splitlines()
        if cut in ends:
            assert torn == [] and err == []
        else:
            [aside] = torn
            assert aside.read_bytes() == whole[kept:cut]      # moved aside, not lost
            assert len(err) == 1 and "torn record" in err[0] and aside.name in err[0]


@pytest.mark.parametrize("tail", [b"\x00" * 512, b"{\"op_code\": 4, \"worker", b"garbage\n\xff\xfe"
                                  b"more garbage\n", b"[1, 2]\n"])
def test_a_garbage_tail_is_moved_aside(spec, journal, capsys, tail):
    folder, whole = journal
    (folder / SWEEP_JOURNAL).write_bytes(whole + tail)
    trials = _check_whole(spec, folder)
    assert len(trials) == 7
    [aside] = folder.glob(f"{SWEEP_JOURNAL}.torn-*")
    assert aside.read_bytes() == tail
    assert "torn record" in capsys.readouterr().err


def test_the_batched_backend_recovers_too(spec, journal):
    folder, whole = journal
    path = folder / SWEEP_JOURNAL
    path.write_bytes(whole + b'{"op_code": 5, "trial')
    backend = BatchedJournalBackend(path)
    storage = optuna_storage(spec, folder, backend=backend)
    study = optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                                directions=["maximize"])
    _run(study, 2)
    backend.flush()
    assert len(_study(spec, folder).get_trials()) == 8


def test_a_record_damaged_in_the_middle_is_refused_in_one_line(spec, journal):
    folder, whole = journal
    lines = whole.splitlines(keepends=True)
    lines[3] = b'{"op_code": 1, "wor\n'
    (folder / SWEEP_JOURNAL).write_bytes(b"".join(lines))
    with pytest.raises(DataError, match="damaged record") as err:
        _study(spec, folder)
    assert "\n" not in str(err.value)
    assert (folder / SWEEP_JOURNAL).read_bytes() == b"".join(lines)   # left as found


@pytest.mark.slow
def test_sigkill_at_random_points_never_loses_the_study(spec, tmp_path, capsys):
    """A writer appending big trials is SIGKILLed at random moments, three times; after each
    kill the journal opens, keeps its complete trials, and takes new ones."""
    folder = tmp_path / "sweep"
    space = tmp_path / "t_journal.yaml"
    rng = random.Random(1919)
    n_before = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(space), str(folder)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        trials = _check_whole(spec, folder)
        # every trial the last round saw complete is still there
        assert len(trials) >= n_before + 1
        n_before = len(trials)
