"""`nxrun run --executor ray` end to end, through the real CLI, on a real local Ray cluster
(127.0.0.1, two fake GPUs) and the real S3 server: a 100-task tree runs with every command in a
sandbox outside the workspace, its outputs are byte-identical to a local run's, and a local run
afterwards is all hits; a failing command fails as locally, with its log; the errors at start."""

from __future__ import annotations

import re
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from weed_server import client_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from cli_workspace import Workspace  # noqa: E402
from synthetic import generate  # noqa: E402

TASKS = 100


def _env(remote, ray_cluster=None) -> dict[str, str]:
    env = client_env(remote.endpoint)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if ray_cluster is not None:
        env["RAY_ADDRESS"] = ray_cluster.address
    return env


def _tree(root: Path, url: str | None, record_pwd: bool) -> Workspace:
    """benchmarks/synthetic.py's binary tree (task i reads its input and its parent's output);
    with `record_pwd`, every task also writes the folder its command ran in to out/<i>.pwd."""
    generate(root, TASKS, parallel=4)
    text = (root / "nxrun.toml").read_text()
    if record_pwd:
        text = re.sub(r'command = "(cat .*?) \| cksum > out/(\d+)\.txt"',
                      r'command = "\1 | cksum > out/\2.txt; pwd > out/\2.pwd"', text)
        text = re.sub(r'outputs = \["out/(\d+)\.txt"\]', r'outputs = ["out/\1.txt", "out/\1.pwd"]', text)
    if url:
        text = text.replace("[workspace]\n", "[workspace]\n", 1) + f'\n[remote]\nurl = "{url}"\n'
    (root / "nxrun.toml").write_text(text)
    return Workspace(root)


def test_a_100_task_tree_runs_in_sandboxes_on_the_cluster_like_a_local_run(ray_cluster, remote, tmp_path):
    on_ray = _tree(tmp_path / "ray", remote.url, record_pwd=True)
    summary = on_ray.run_json("tree:all", "--executor", "ray", env=_env(remote, ray_cluster))
    statuses = Workspace.statuses(summary)
    assert len(statuses) == TASKS and set(statuses.values()) == {"miss"}, statuses
    # every command ran in a sandbox of its own, outside the workspace
    folders = [(on_ray.root / "out" / f"{i}.pwd").read_text().strip() for i in range(TASKS)]
    assert len(set(folders)) == TASKS
    for folder in folders:
        assert "nxrun-sandbox-" in folder and not folder.startswith(str(on_ray.root)), folder
        assert not Path(folder).exists()        # removed after the task
    # byte-identical to a local run of the same tree
    local = _tree(tmp_path / "local", None, record_pwd=False)
    local_summary = local.run_json("tree:all", "--executor", "local")
    assert set(Workspace.statuses(local_summary).values()) == {"miss"}
    for i in range(TASKS):
        assert (on_ray.root / "out" / f"{i}.txt").read_bytes() == (local.root / "out" / f"{i}.txt").read_bytes()
    # and a local run afterwards, in the workspace the cluster ran, is all hits
    again = on_ray.run_json("tree:all", "--executor", "local", env=_env(remote))
    assert set(Workspace.statuses(again).values()) == {"local-hit"}, Workspace.statuses(again)
    # so is a fresh clone of it (another machine) through the remote cache
    clone = tmp_path / "clone"
    shutil.copytree(on_ray.root, clone, ignore=shutil.ignore_patterns(".nxrun", "out"))
    elsewhere = Workspace(clone).run_json("tree:all", env=_env(remote))
    assert set(Workspace.statuses(elsewhere).values()) == {"remote-hit"}


def test_a_failing_command_on_the_cluster_fails_the_task_with_its_log(ray_cluster, remote, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.bad]
        command = "echo the worker says hello; echo and then fails >&2; exit 5"
        outputs = ["out/bad.txt"]

        [projects.p.targets.after]
        command = "echo never > out/after.txt"
        depends-on = ["bad"]
        outputs = ["out/after.txt"]
        """)
    result = ws.nxrun("run", "p:after", "--executor", "ray", env=_env(remote, ray_cluster))
    assert result.returncode != 0
    assert "the worker says hello" in result.stdout and "and then fails" in result.stdout
    assert "exit code 5" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (ws.root / "out" / "after.txt").exists()
    assert not remote.keys("trusted/entries")


def test_no_remote_cache_is_a_clear_error_that_says_why(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", """\
        [projects.p.targets.t]
        command = "echo hi > out.txt"
        outputs = ["out.txt"]
        """)
    result = ws.nxrun("run", "p:t", "--executor", "ray")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "remote cache" in result.stderr and "[remote]" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_cluster_is_a_clear_error_at_start_not_a_hang(remote, tmp_path, ray_installed):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "echo hi > out.txt"
        outputs = ["out.txt"]
        """)
    env = _env(remote)
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    started = time.monotonic()
    result = ws.nxrun("run", "p:t", "--executor", "ray", env=env, timeout=60)
    assert result.returncode == 2 and f"127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 30


@pytest.mark.parametrize("setting", ["env", "toml"])
def test_the_executor_is_chosen_by_env_or_toml(ray_cluster, remote, tmp_path, setting):
    ws = Workspace(tmp_path / "ws")
    executor_line = 'executor = "ray"\n' if setting == "toml" else ""
    ws.write("nxrun.toml", f"[workspace]\n{executor_line}\n[remote]\nurl = \"{remote.url}\"\n\n"
                           "[projects.p.targets.t]\ncommand = \"mkdir -p out; pwd > out/where.txt\"\n"
                           "outputs = [\"out/where.txt\"]\n")
    env = _env(remote, ray_cluster)
    args = ["p:t"]
    if setting == "flag":
        args += ["--executor", "ray"]
    if setting == "env":
        env["NXRUN_EXECUTOR"] = "ray"
    summary = ws.run_json(*args, env=env)
    assert Workspace.statuses(summary) == {"p:t": "miss"}
    assert "nxrun-sandbox-" in ws.read("out/where.txt")


def test_gpu_tasks_run_at_once_on_distinct_gpus_of_the_cluster_and_a_two_gpu_task_gets_two(ray_cluster, remote,
                                                                                         tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # both wait until both have started: they hold their GPUs at the same time, or time out
    wait = (f"touch {barrier}/$NXRUN_TASK; n=0; while [ $(ls {barrier} | wc -l) -lt 2 ] && [ $n -lt 300 ]; "
            "do sleep 0.1; n=$((n+1)); done")
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [workspace]
        parallel = 4

        [remote]
        url = "{remote.url}"

        [projects.g.targets.a]
        command = "{wait}; echo $CUDA_VISIBLE_DEVICES > out/a.txt"
        outputs = ["out/a.txt"]
        resources = ["gpu"]

        [projects.g.targets.b]
        command = "{wait}; echo $CUDA_VISIBLE_DEVICES > out/b.txt"
        outputs = ["out/b.txt"]
        resources = ["gpu"]

        [projects.g.targets.all]
        depends-on = ["a", "b"]
        """)
    ws.write("out/.keep", "")
    summary = ws.run_json("g:all", "--executor", "ray", env=_env(remote, ray_cluster))
    assert Workspace.statuses(summary) == {"g:a": "miss", "g:b": "miss"}
    assert len(list(barrier.iterdir())) == 2
    assert sorted([ws.read("out/a.txt").strip(), ws.read("out/b.txt").strip()]) == ["0", "1"]


def test_a_hardware_task_is_keyed_by_the_gpu_node_that_ran_it_not_the_driver(ray_cluster, remote, tmp_path):
    from ray_cluster import FAKE_GPU_MODEL

    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.b.targets.bench]
        command = "mkdir -p results; echo timing > results/t.txt"
        outputs = ["results/t.txt"]
        resources = ["gpu"]
        cache = "hardware"
        """)
    env = _env(remote, ray_cluster)
    first = ws.run_json("b:bench", "--executor", "ray", env=env)
    etag = first["tasks"][0]["etag"]
    import json

    manifest = json.loads(remote.get(f"trusted/entries/{etag}.json"))
    assert FAKE_GPU_MODEL in manifest["runtime_facts"]["hardware"]
    assert manifest["runtime_facts"]["ray_node"] == ray_cluster.gpu_node.node_id
    # the same cluster again: a hit, decided here
    assert Workspace.statuses(ws.run_json("b:bench", "--executor", "ray", env=env)) == {"b:bench": "local-hit"}
    # this machine has no such GPU: locally the task's ETag differs, so the timing is not reused
    local = ws.run_json("b:bench", "--executor", "local", env=_env(remote))
    assert Workspace.statuses(local) == {"b:bench": "miss"} and local["tasks"][0]["etag"] != etag


def test_ctrl_c_cancels_the_runs_ray_tasks_and_their_commands(ray_cluster, remote, tmp_path):
    import os
    import signal
    import subprocess

    marker = tmp_path / "started"
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.long]
        command = "echo $$ > {marker}.pid; touch {marker}; exec sleep 300"
        outputs = ["out/long.txt"]
        """)
    env = dict(os.environ)
    env.pop("NXRUN_REMOTE", None)
    env.update(_env(remote, ray_cluster))
    env["PYTHONFAULTHANDLER"] = "1"     # a run that hangs after Ctrl-C shows its threads' stacks on SIGABRT
    # Ctrl-C's own disposition, whatever this test was started with: a shell without job control starts
    # background jobs with SIGINT ignored, and the ignore is inherited (Python then sets no handler)
    process = subprocess.Popen([sys.executable, "-m", "nxrun", "run", "p:long", "--executor", "ray"], cwd=ws.root,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the task never started on the cluster"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            stdout, stderr = process.communicate(timeout=30)
            raise AssertionError(f"nxrun still ran 60 s after Ctrl-C; its threads:\n{stderr}\n{stdout}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0 and "interrupted" in (stdout + stderr), stdout + stderr
    pid = int(Path(f"{marker}.pid").read_text())
    deadline = time.monotonic() + 30
    while _runs_sleep(pid):
        assert time.monotonic() < deadline, "the command still runs on the worker after Ctrl-C"
        time.sleep(0.1)
    assert not remote.keys("trusted/entries")


def _runs_sleep(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"sleep" in handle.read()
    except OSError:
        return False


def test_a_task_that_ran_on_the_cluster_has_its_explain_manifest_and_why_works(ray_cluster, remote, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.write("src/in.txt", "one\n")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "mkdir -p out; cat src/in.txt > out/t.txt"
        inputs = ["src/in.txt"]
        outputs = ["out/t.txt"]
        """)
    summary = ws.run_json("p:t", "--executor", "ray", env=_env(remote, ray_cluster))
    assert ws.read("out/t.txt") == "one\n"
    # the entry the cluster's run left in the remote cache says what its ETag was made of, as a
    # local run's does (`cache sync`, other machines)
    import json

    manifest = json.loads(remote.get(f"trusted/entries/{summary['tasks'][0]['etag']}.json"))
    assert "file:src/in.txt" in manifest["explain"] and "command" in manifest["explain"]
    ws.write("src/in.txt", "two\n")
    why = ws.nxrun("why", "p:t", env=_env(remote))
    assert why.returncode == 0 and "src/in.txt" in why.stdout, why.stdout + why.stderr


def test_a_runtime_probe_is_answered_by_the_nodes_that_run_the_task(ray_cluster, remote, tmp_path):
    import json

    from nxrun.hashing import digest_text

    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [runtime]
        smi = "command -v nvidia-smi >/dev/null && echo has-smi || echo no-smi"

        [projects.b.targets.bench]
        command = "mkdir -p results; echo timing > results/t.txt"
        inputs = ["runtime:smi"]
        outputs = ["results/t.txt"]
        resources = ["gpu"]
        """)
    summary = ws.run_json("b:bench", "--executor", "ray", env=_env(remote, ray_cluster))
    etag = summary["tasks"][0]["etag"]
    manifest = json.loads(remote.get(f"trusted/entries/{etag}.json"))
    assert manifest["explain"]["runtime:smi"] == digest_text("has-smi")     # the GPU node's answer
    local = ws.run_json("b:bench", "--executor", "local", env=_env(remote))  # here: no nvidia-smi
    assert Workspace.statuses(local) == {"b:bench": "miss"} and local["tasks"][0]["etag"] != etag


def test_without_ray_installed_the_ray_executor_says_how_to_install_it(remote, tmp_path):
    import os

    hidden = tmp_path / "no-ray" / "ray"          # an importable `ray` that fails as a missing one does
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    ws = Workspace(tmp_path / "ws")
    ws.write("nxrun.toml", f"""\
        [remote]
        url = "{remote.url}"

        [projects.p.targets.t]
        command = "echo hi > out.txt"
        outputs = ["out.txt"]
        """)
    env = _env(remote)
    env["PYTHONPATH"] = os.pathsep.join([str(hidden.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    result = ws.nxrun("run", "p:t", "--executor", "ray", env=env)
    assert result.returncode == 2 and "pip install 'nxrun[ray]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert ws.nxrun("run", "p:t", env=_env(remote)).returncode == 0      # the local executor needs no ray
