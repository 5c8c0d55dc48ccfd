"""Ray Job entry point: run an esper-ab sweep inside a job on the cluster.

The job supervisor sets ``RAY_ADDRESS``, so the sweep joins the cluster with a bare
``ray.init()`` (passing ``num_cpus`` while connecting would raise). Submit it with
``jobs/submit.sh`` or ``jobs/submit.py``; the entrypoint must run under the interpreter that
has esper-ab installed on the cluster (``.venv/bin/python`` there):

    python jobs/sweep_job.py SPACE.yaml [--tracking-uri http://mlflow:5000] [...]

Every option after SPACE.yaml goes to ``esper-ab sweep`` unchanged.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from esper_ab.cli import main as cli_main
    from esper_ab.study.auth import auth_mode

    mode = auth_mode()
    print(f"esper-ab job: RAY_ADDRESS={os.environ.get('RAY_ADDRESS', '(unset)')}, "
          f"auth {mode}, python {sys.executable}", flush=True)
    return cli_main(["sweep", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
