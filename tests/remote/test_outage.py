"""A remote that stalls or disappears mid-run never fails the run: the breaker opens after three
errors, one warning is printed, the summary counts what was skipped, and the run ends in bounded
time. `--remote=required` fails instead."""

from __future__ import annotations

import os
import time

import pytest

from remote_helpers import nxrun
from tcp_proxy import FlakyProxy

FAN_OUT = 24
READ_TIMEOUT = 1


def _fan_out_workspace(root, url: str, first_command: str):
    """One task that turns the remote bad while it runs, then FAN_OUT tasks that depend on it."""
    root.mkdir(parents=True)
    lines = [f'[remote]\nurl = "{url}"\nconnect-timeout = 1\nread-timeout = {READ_TIMEOUT}\n',
             '[workspace]\nparallel = 4\n',
             f'[projects.p.targets.first]\ncommand = "{first_command}; echo first > first.txt"\n'
             'inputs = []\noutputs = ["first.txt"]\n']
    for i in range(FAN_OUT):
        lines.append(f'[projects.p.targets.t{i}]\ncommand = "cat first.txt > out{i}.txt; echo {i} >> out{i}.txt"\n'
                     f'depends-on = ["first"]\ninputs = []\noutputs = ["out{i}.txt"]\n')
    (root / "nxrun.toml").write_text("\n".join(lines))
    return root


@pytest.fixture
def proxy(s3_server, tmp_path):
    flags = tmp_path / "proxy-flags"
    flags.mkdir()
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    proxy = FlakyProxy(port, flags)
    yield proxy
    proxy.close()


def _run_all(root, endpoint, *extra, env=None):
    tasks = ["p:first"] + [f"p:t{i}" for i in range(FAN_OUT)]
    started = time.monotonic()
    result = nxrun(root, "run", *tasks, *extra, endpoint=endpoint, env=env, timeout=300)
    return result, time.monotonic() - started


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_remote_failing_mid_run_warns_once_and_finishes_in_bounded_time(remote, proxy, tmp_path, mode):
    root = _fan_out_workspace(tmp_path / "ws", remote.url, f"touch {proxy.flag_dir / mode}")
    result, elapsed = _run_all(root, proxy.endpoint)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("is unavailable") == 1, result.stdout
    assert "remote cache unavailable" in result.stdout and "remote reads/writes skipped" in result.stdout
    assert all((root / f"out{i}.txt").read_text() == f"first\n{i}\n" for i in range(FAN_OUT))
    # without the breaker: FAN_OUT lookups and uploads, each waiting out its timeouts and a retry
    assert elapsed < 20, f"took {elapsed:.1f}s"


def test_server_paused_mid_run(remote, s3_server, tmp_path):
    root = _fan_out_workspace(tmp_path / "ws", remote.url, f"kill -STOP {s3_server.process.pid}")
    try:
        result, elapsed = _run_all(root, remote.endpoint, "--json")
    finally:
        s3_server.resume()
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("is unavailable") == 1, result.stderr
    assert result.counts == {"miss": FAN_OUT + 1}
    assert result.summary["remote"]["skipped"] > 0
    assert result.summary["remote"]["breaker_opened"] >= 1
    assert elapsed < 20, f"took {elapsed:.1f}s"


def test_unreachable_remote_is_skipped_quickly(tmp_path):
    from weed_server import free_ports

    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"          # nothing listens there
    root = _fan_out_workspace(tmp_path / "ws", "s3://nobody/cache", "true")
    result, elapsed = _run_all(root, endpoint, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("is unavailable") == 1
    assert result.counts == {"miss": FAN_OUT + 1}
    assert elapsed < 15


def test_required_remote_fails_the_run_when_unreachable(tmp_path):
    from weed_server import free_ports

    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    root = _fan_out_workspace(tmp_path / "ws", "s3://nobody/cache", "true")
    result, _ = _run_all(root, endpoint, "--remote=required")
    assert result.returncode != 0
    assert "required" in result.stderr
    assert not (root / "first.txt").exists()


def test_missing_credentials_warn_once_and_run_locally(remote, tmp_path):
    root = _fan_out_workspace(tmp_path / "ws", remote.url, "true")
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_CONFIG_FILE": os.devnull}
    result, _ = _run_all(root, remote.endpoint, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("refused") == 1, result.stderr
    assert remote.keys() == []
