"""A real local Ray cluster on 127.0.0.1 for the Ray executor tests and benchmark: a head node
that runs no GPU task and one worker node declaring two fake GPUs (Ray's scheduling and
CUDA_VISIBLE_DEVICES need no hardware; an `nvidia-smi` on that node's PATH describes them, so
the two nodes have different hardware fingerprints), small CPU counts for a small machine.

RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set before Ray starts: without it Ray turns 127.0.0.1
into the machine's outward address, and tests must talk to loopback only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


FAKE_GPU_MODEL = "NVIDIA FakeGPU-80GB"
FAKE_NVIDIA_SMI = """#!/bin/sh
# answers the two questions nxrun's hardware fingerprint asks, for {count} fake GPUs
case "$*" in
  *--query-gpu*) i=0; while [ $i -lt {count} ]; do echo "{model}, 9.0, 580.00, Disabled, 81559 MiB"; i=$((i+1)); done ;;
  *) echo "| NVIDIA-SMI 580.00    Driver Version: 580.00    CUDA Version: 13.0 |" ;;
esac
"""


def fake_gpu_tools(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI.format(count=count, model=FAKE_GPU_MODEL))
    script.chmod(0o755)
    return folder


def start_cluster(env: dict[str, str], tools_dir: Path, head_cpus: int = 1, gpu_node_cpus: int = 2,
                  gpus: int = 2) -> RayCluster:
    """Start the cluster with `env` in the environment of its processes (credentials of the S3
    server: workers take them from their own environment, as on a real cluster)."""
    os.environ.update(LOOPBACK_ENV)        # stays: every driver of this process joins on loopback too
    saved = {name: os.environ.get(name) for name in env}
    saved_path = os.environ.get("PATH", "")
    os.environ.update(env)                 # for the cluster's processes only
    try:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, connect=False,
                          head_node_args={"num_cpus": head_cpus, "num_gpus": 0, "node_ip_address": "127.0.0.1",
                                          "include_dashboard": False})
        # the GPU node's processes find an `nvidia-smi` that describes its fake GPUs, so its hardware
        # fingerprint differs from the head's (and from the driver's)
        os.environ["PATH"] = f"{fake_gpu_tools(tools_dir, gpus)}{os.pathsep}{saved_path}"
        gpu_node = cluster.add_node(num_cpus=gpu_node_cpus, num_gpus=gpus, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
    finally:
        os.environ["PATH"] = saved_path
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return RayCluster(cluster, cluster.address, gpu_node)
