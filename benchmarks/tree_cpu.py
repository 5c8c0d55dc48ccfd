"""CPU seconds of a command and of every process it starts, orphans included.

A sweep test's CPU is spread over processes that outlive their parents (Ray's raylet,
workers and agents of a SIGKILLed driver, an ``mlflow server``): ``/usr/bin/time`` and
``getrusage`` miss them once they are re-parented to init. Here the measuring process is
a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): orphans are re-parented to it and
reaped by it, so ``RUSAGE_CHILDREN`` holds the user+sys CPU of the whole tree. On a loaded
machine compare these CPU seconds, not wall seconds.

    python benchmarks/tree_cpu.py LABEL -- CMD [ARG ...]
    python benchmarks/tree_cpu.py repro -- .venv/bin/python -m pytest -q tests/x.py::test_y

Prints one line: label, exit code, CPU (user+sys), wall, and any descendant still alive
60 s after the command ended (not reaped, not counted).
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        print("usage: tree_cpu.py LABEL -- CMD [ARG ...]", file=sys.stderr)
        return 2
    label, cmd = argv[0], argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("tree_cpu.py: cannot become a child subreaper (Linux only)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    rc = subprocess.run(cmd).returncode
    wall = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:          # reap the orphans re-parented to us
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.2)
    left = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True,
                          text=True).stdout.split()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{label}\trc={rc}\tcpu_s={ru.ru_utime + ru.ru_stime:.1f}\tuser={ru.ru_utime:.1f}"
          f"\tsys={ru.ru_stime:.1f}\twall_s={wall:.1f}\tleft={left}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
