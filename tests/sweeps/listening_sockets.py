"""Run by test_faults_sockets.py in a fresh interpreter: start the embedded Ray the way a
sweep does (``connect_ray``), list every LISTEN socket of the driver and of each Ray helper
process (psutil), shut Ray down, and print one JSON line."""

from __future__ import annotations

import json
import os
import sys
import time

import psutil


def main() -> dict:
    import ray

    from esper_ab.study._reaper import helper_processes
    from esper_ab.study.runtime import connect_ray

    connect_ray(None, num_cpus=1)
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)   # every helper is up
    try:
        procs = [psutil.Process(os.getpid()), *helper_processes()]
        out = []
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
                socks = [f"{c.laddr.ip}:{c.laddr.port}" for c in p.net_connections("inet")
                         if c.status == psutil.CONN_LISTEN]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out.append({"pid": p.pid, "cmd": cmd[:2000], "listen": socks})
        return {"processes": out}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    print(json.dumps(main()))
    sys.stdout.flush()
    os._exit(0)
