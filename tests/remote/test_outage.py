"""A remote that stalls or disappears mid-run never fails the run: the breaker opens after three
errors, one warning is printed, the summary counts what was skipped, and the run ends in bounded
time. `--remote=required` fails instead."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from remote_helpers import fresh_clone, nxrun
from tcp_proxy import FlakyProxy
from weed_server import client_env

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


# what docs/remote-cache.md promises with the default settings: outage-budget + 2 x (connect-timeout +
# read-timeout + 1 s) = 10 + 2 x 9 s
DOCUMENTED_WORST_CASE = 28
SHORT_TASKS = 8


def _short_tasks_workspace(root, url: str):
    """Eight 0.1 s tasks, one at a time (the slowest case: every lookup waits on its own), and the
    remote's default timeouts."""
    root.mkdir(parents=True)
    lines = [f'[remote]\nurl = "{url}"\n', '[workspace]\nparallel = 1\n']
    for i in range(SHORT_TASKS):
        lines.append(f'[projects.p.targets.t{i}]\ncommand = "sleep 0.1; echo {i} > out{i}.txt"\n'
                     f'inputs = []\noutputs = ["out{i}.txt"]\n')
    (root / "nxrun.toml").write_text("\n".join(lines))
    return root


def test_a_stalled_server_costs_a_run_a_bounded_time(remote, proxy, tmp_path):
    """A server that accepts connections and never answers (as when SIGSTOPped): each lookup waits
    out its read timeout, and the run's outage budget then drops the remote. Before, timeouts were
    retried and the breaker needed three of them: eight 0.1 s tasks took about a minute."""
    root = _short_tasks_workspace(tmp_path / "ws", remote.url)
    proxy.set_mode("hang")
    started = time.monotonic()
    result = nxrun(root, "run", *[f"p:t{i}" for i in range(SHORT_TASKS)], endpoint=proxy.endpoint, timeout=300)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert all((root / f"out{i}.txt").read_text() == f"{i}\n" for i in range(SHORT_TASKS))
    # generous: the documented worst case plus start-up and slack for a busy machine
    assert elapsed < DOCUMENTED_WORST_CASE + 12, f"took {elapsed:.1f}s"
    match = re.search(r"remote cache unavailable, (\d+) remote reads/writes skipped", result.stdout)
    assert match and int(match.group(1)) > 0, result.stdout
    assert result.stdout.count("outage-budget") == 1, result.stdout


@pytest.fixture
def slow_proxy(s3_server, tmp_path):
    flags = tmp_path / "slow-proxy-flags"
    flags.mkdir()
    proxy = FlakyProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), flags, slow_delay=SLOW_ANSWER)
    yield proxy
    proxy.close()


SLOW_READ_TIMEOUT = 2
SLOW_ANSWER = 1.7             # each piece of every answer comes just before the read timeout
SLOW_TASKS = 24


def test_a_server_that_answers_just_before_the_read_timeout_costs_a_run_a_bounded_time(remote, slow_proxy,
                                                                                         tmp_path):
    """No request fails, so neither the breaker nor a budget of failed requests ever stops them:
    every lookup and upload of every task waited about a read timeout, and 24 0.1 s tasks took
    over a minute. Slow answers count towards the outage budget."""
    root = tmp_path / "ws"
    root.mkdir()
    lines = [f'[remote]\nurl = "{remote.url}"\nconnect-timeout = 1\nread-timeout = {SLOW_READ_TIMEOUT}\n',
             '[workspace]\nparallel = 1\n']
    for i in range(SLOW_TASKS):
        lines.append(f'[projects.p.targets.t{i}]\ncommand = "sleep 0.1; echo {i} > out{i}.txt"\n'
                     f'inputs = []\noutputs = ["out{i}.txt"]\n')
    (root / "nxrun.toml").write_text("\n".join(lines))
    slow_proxy.set_mode("slow")
    started = time.monotonic()
    result = nxrun(root, "run", *[f"p:t{i}" for i in range(SLOW_TASKS)], endpoint=slow_proxy.endpoint,
                   timeout=600)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert all((root / f"out{i}.txt").read_text() == f"{i}\n" for i in range(SLOW_TASKS))
    # the documented bound for these settings: outage-budget + 2 x (connect + read timeout + 1 s),
    # with slack for start-up and a busy machine
    bound = 10 + 2 * (1 + SLOW_READ_TIMEOUT + 1)
    assert elapsed < bound + 12, f"took {elapsed:.1f}s\n{result.stdout}{result.stderr}"
    assert result.stdout.count("outage-budget") == 1, result.stdout


def test_a_server_that_trickles_its_answers_costs_a_run_a_bounded_time(remote, slow_proxy, tmp_path):
    """One byte of every answer just before the read timeout: no read times out, and one lookup
    would take longer than the test's patience. A request that moves no blob gets
    connect-timeout + read-timeout + 1 s in all, then counts as an outage."""
    root = tmp_path / "ws"
    root.mkdir()
    lines = [f'[remote]\nurl = "{remote.url}"\nconnect-timeout = 1\nread-timeout = {SLOW_READ_TIMEOUT}\n',
             '[workspace]\nparallel = 1\n']
    for i in range(8):
        lines.append(f'[projects.p.targets.t{i}]\ncommand = "sleep 0.1; echo {i} > out{i}.txt"\n'
                     f'inputs = []\noutputs = ["out{i}.txt"]\n')
    (root / "nxrun.toml").write_text("\n".join(lines))
    slow_proxy.set_mode("trickle")
    started = time.monotonic()
    result = nxrun(root, "run", *[f"p:t{i}" for i in range(8)], endpoint=slow_proxy.endpoint, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert all((root / f"out{i}.txt").read_text() == f"{i}\n" for i in range(8))
    bound = 10 + 2 * (1 + SLOW_READ_TIMEOUT + 1)
    assert elapsed < bound + 12, f"took {elapsed:.1f}s\n{result.stdout}{result.stderr}"


def test_a_full_local_disk_is_not_a_remote_outage(remote, tmp_path):
    """Blobs from the remote cannot be written locally (here: a file-size limit, EFBIG, as a full
    disk gives ENOSPC): the local cache turns itself off for the run with one warning, and the
    remote is not reported unavailable, nor its breaker opened."""
    first = tmp_path / "first"
    first.mkdir()
    lines = [f'[remote]\nurl = "{remote.url}"\n', '[workspace]\nparallel = 2\n']
    for i in range(4):
        # the task lifts the file-size limit nxrun runs under, for its own output
        lines.append(f'[projects.p.targets.t{i}]\ncommand = "ulimit -f unlimited; head -c 2000000 /dev/zero > '
                     f'big{i}.bin; echo {i} >> big{i}.bin"\ninputs = []\noutputs = ["big{i}.bin"]\n')
    (first / "nxrun.toml").write_text("\n".join(lines))
    tasks = [f"p:t{i}" for i in range(4)]
    uploaded = nxrun(first, "run", "--json", *tasks, endpoint=remote.endpoint)
    assert uploaded.returncode == 0 and uploaded.summary["remote"]["uploads"] == 4, uploaded.stderr
    second = tmp_path / "second"
    fresh_clone(first, second)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NXRUN_"))}
    env.update(client_env(remote.endpoint), NO_COLOR="1")
    code = ("import resource, sys, runpy; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, "
            "resource.RLIM_INFINITY)); sys.argv = ['nxrun', *sys.argv[1:]]; runpy.run_module('nxrun', "
            "run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code, "-C", str(second), "run", "--json", *tasks],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert all((second / f"big{i}.bin").stat().st_size == 2_000_002 for i in range(4))
    assert "is unavailable" not in result.stderr, result.stderr
    assert summary["remote"]["errors"] == 0 and summary["remote"]["breaker_opened"] == 0, summary["remote"]
    assert summary["remote"]["skipped"] == 0, summary["remote"]
    assert len(summary["warnings"]) == 1 and "could not write to the cache" in summary["warnings"][0], \
        summary["warnings"]
