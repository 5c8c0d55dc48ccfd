"""Run by test_sweeps_cluster.py in a fresh interpreter: a 2-node local Ray cluster with token
authentication (set before Ray is imported, as on a real cluster), one worker declaring a GPU,
and a sweep joining it through --address. Prints one JSON line with the node ids."""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ["RAY_AUTH_MODE"] = "token"
# A private Ray temp dir: this cluster's address file must not be found by anyone else's
# bare ray.init() on this machine.
os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="eab", dir="/tmp")


def main(folder: str) -> int:
    from ray.cluster_utils import Cluster
    from sweep_helpers import space

    from esper_ab.study.spec import parse_sweep_spec
    from esper_ab.tune_driver.tune_runner import SweepOptions, run_sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    try:
        gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        spec = parse_sweep_spec(space(name="two_nodes", num_samples=4, max_concurrent=2,
                                      replicates=2, resources={"cpu": 1, "gpu": 0.5}))
        out = run_sweep(spec, options=SweepOptions(
            address=cluster.address, tracking_uri=f"sqlite:///{folder}/mlflow.db",
            n_boot=50, n_perm=50))
        import ray

        print(json.dumps({"status": out.status, "gpu_node": gpu_node.node_id,
                          "head_node": cluster.head_node.node_id,
                          "still_connected": ray.is_initialized()}))
        return 0
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
