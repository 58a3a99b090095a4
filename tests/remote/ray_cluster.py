"""A real local Ray cluster on 127.0.0.1 for the Ray executor tests and benchmark: a head node
that runs no GPU task and one worker node declaring two fake GPUs (Ray's scheduling and
CUDA_VISIBLE_DEVICES need no hardware), small CPU counts for a small machine.

RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set before Ray starts: without it Ray turns 127.0.0.1
into the machine's outward address, and tests must talk to loopback only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass
class RayCluster:
    cluster: object
    address: str
    gpu_node: object

    def nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()


def start_cluster(env: dict[str, str], head_cpus: int = 1, gpu_node_cpus: int = 2, gpus: int = 2) -> RayCluster:
    """Start the cluster with `env` in the environment of its processes (credentials of the S3
    server: workers take them from their own environment, as on a real cluster)."""
    os.environ.update(LOOPBACK_ENV)        # stays: every driver of this process joins on loopback too
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)                 # for the cluster's processes only
    try:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, connect=False,
                          head_node_args={"num_cpus": head_cpus, "num_gpus": 0, "node_ip_address": "127.0.0.1",
                                          "include_dashboard": False})
        gpu_node = cluster.add_node(num_cpus=gpu_node_cpus, num_gpus=gpus, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return RayCluster(cluster, cluster.address, gpu_node)
