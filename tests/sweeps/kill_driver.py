"""A sweep driver for test_sweeps_kill.py: ``esper-ab sweep`` with one config per Tune trial
(``SweepOptions(batch_size=1)``, which the command line does not expose: at replay fidelity
the command batches configs and logs only the finalists as child runs). Exit codes as the
CLI: 0, 2 (one error line), 130 (interrupted).

    python kill_driver.py SPACE.yaml TRACKING_URI CACHE_DIR [--resume]
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

from esper_ab.errors import EsperABError
from esper_ab.study.spec import load_sweep_spec
from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep


def main(argv: list[str]) -> int:
    space, uri, cache = argv[:3]
    try:
        out = run_sweep(load_sweep_spec(space), options=SweepOptions(
            tracking_uri=uri, cache_dir=cache, resume="--resume" in argv, batch_size=1,
            n_boot=50, n_perm=50))
    except EsperABError as exc:
        print(f"esper-ab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esper-ab: interrupted", file=sys.stderr)
        return 130
    print(f"finished: {out.sweep_run_id}")
    return 0


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR2, all_threads=True)   # a test that waited too long
    rc = main(sys.argv[1:])
    from esper_ab.study.runtime import embedded_ray_started

    if embedded_ray_started():      # as the CLI: skip Ray's slow C++ teardown at exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)
