"""Symlinks and special files among a task's inputs: a link is hashed as what it is (its target
string, and the contents of a regular file it points to), never walked into; a file nxrun cannot
hash is an error naming the task and the path, never a traceback or a hang."""

from __future__ import annotations

import json
import os

from cli_workspace import Workspace

DEFAULT_INPUTS = """
[projects.app.targets.build]
command = "echo built > out.txt"
outputs = ["out.txt"]
"""


def _venv_like(ws: Workspace) -> None:
    """What `python3 -m venv .venv` lays out, links included (made by hand: no real venv)."""
    ws.write(".venv/lib/python3.12/site-packages/pkg/__init__.py", "x = 1\n")
    ws.write(".venv/pyvenv.cfg", "home = /usr/bin\n")
    os.symlink("lib", ws.root / ".venv" / "lib64")
    (ws.root / ".venv" / "bin").mkdir()
    os.symlink("/usr/bin/python3", ws.root / ".venv" / "bin" / "python")
    os.symlink("python", ws.root / ".venv" / "bin" / "python3")


def _etag(ws: Workspace) -> str:
    return json.loads(ws.nxrun("show", "app:build", "--json", check=True).stdout)["etag"]


def test_links_to_folders_dangling_links_and_loops_are_hashed_not_followed(ws: Workspace, tmp_path):
    ws.write("nxrun.toml", DEFAULT_INPUTS)
    ws.write("src/main.py", "print('hi')\n")
    _venv_like(ws)
    os.symlink("does-not-exist.txt", ws.root / "src" / "dangling")
    os.symlink("loop-b", ws.root / "src" / "loop-a")
    os.symlink("loop-a", ws.root / "src" / "loop-b")
    os.symlink("itself", ws.root / "src" / "itself")
    os.symlink("..", ws.root / "src" / "up")                    # a folder link back up: a cycle if followed
    outside = tmp_path / "outside.txt"
    outside.write_text("outside v1\n")
    os.symlink(outside, ws.root / "src" / "outside")

    first = ws.nxrun("run", "--json", "app:build", timeout=60)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert ws.statuses(json.loads(first.stdout)) == {"app:build": "miss"}
    assert ws.statuses(ws.run_json("app:build")) == {"app:build": "local-hit"}

    components = json.loads(ws.nxrun("show", "app:build", "--json", check=True).stdout)["components"]
    for link in (".venv/lib64", ".venv/bin/python", "src/dangling", "src/loop-a", "src/up", "src/outside"):
        assert f"file:{link}" in components
    # nothing was listed through a link to a folder
    assert not [name for name in components if name.startswith(("file:.venv/lib64/", "file:src/up/"))]
    assert "file:.venv/lib/python3.12/site-packages/pkg/__init__.py" in components

    before = _etag(ws)
    os.unlink(ws.root / "src" / "dangling")
    os.symlink("another-missing-file.txt", ws.root / "src" / "dangling")
    after_retarget = _etag(ws)
    assert after_retarget != before                          # a link's target string is part of its digest
    os.unlink(ws.root / ".venv" / "lib64")
    os.symlink("lib/python3.12", ws.root / ".venv" / "lib64")
    assert _etag(ws) != after_retarget                       # so is a folder link's
    changed_folder_link = _etag(ws)
    outside.write_text("outside v2\n")                       # a linked file's contents count too
    assert _etag(ws) != changed_folder_link
    assert ws.statuses(ws.run_json("app:build")) == {"app:build": "miss"}
    assert ws.statuses(ws.run_json("app:build")) == {"app:build": "local-hit"}


def test_a_pattern_naming_a_folder_link_looks_behind_it_whatever_was_walked_first(ws: Workspace, tmp_path):
    ws.write("nxrun.toml", """
        [projects.app.targets.all]
        command = "echo all > all.txt"
        inputs  = ["**/*"]
        outputs = ["all.txt"]
        [projects.app.targets.through-link]
        command = "echo linked > linked.txt"
        inputs  = ["data/**/*.txt", "datasets/imagenet"]
        outputs = ["linked.txt"]
    """)
    ws.write("real/a.txt", "a\n")
    os.symlink("real", ws.root / "data")
    shared = tmp_path / "shared-storage" / "imagenet"          # a data set outside the workspace
    shared.mkdir(parents=True)
    (shared / "train.bin").write_bytes(b"v1")
    os.symlink("..", shared / "parent")                       # a loop behind the link: listed, not followed
    (ws.root / "datasets").mkdir()
    os.symlink(shared, ws.root / "datasets" / "imagenet")

    def file_components(task):
        components = json.loads(ws.nxrun("show", task, "--json", check=True).stdout)["components"]
        return sorted(n for n in components if n.startswith("file:"))

    expected = ["file:data/a.txt", "file:datasets/imagenet/parent", "file:datasets/imagenet/train.bin"]
    assert file_components("app:through-link") == expected
    everything = file_components("app:all")                    # a walk of the root lists the links only
    assert "file:data" in everything and "file:datasets/imagenet" in everything
    assert not [n for n in everything if n.startswith(("file:data/", "file:datasets/imagenet/"))]
    together = ws.run_json("app:all", "app:through-link")    # the root folder is walked first here
    assert ws.statuses(together) == {"app:all": "miss", "app:through-link": "miss"}
    assert ws.statuses(ws.run_json("app:through-link")) == {"app:through-link": "local-hit"}
    (shared / "train.bin").write_bytes(b"v2")                 # the data set changed behind the link
    assert ws.statuses(ws.run_json("app:all", "app:through-link")) == \
        {"app:all": "local-hit", "app:through-link": "miss"}


def test_a_fifo_among_the_inputs_is_a_clear_error_not_a_hang(ws: Workspace):
    ws.write("nxrun.toml", DEFAULT_INPUTS)
    ws.write("src/main.py", "print('hi')\n")
    os.mkfifo(ws.root / "src" / "events.pipe")
    for command in (["run", "app:build"], ["show", "app:build"], ["why", "app:build"]):
        result = ws.nxrun(*command, timeout=60)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert "app:build" in result.stderr and "src/events.pipe" in result.stderr
        assert "fifo" in result.stderr and "!src/events.pipe" in result.stderr
    assert not (ws.root / "out.txt").exists()


def test_a_socket_named_as_an_input_is_a_clear_error(ws: Workspace):
    import socket

    ws.write("nxrun.toml", """
        [projects.app.targets.build]
        command = "echo built > out.txt"
        inputs  = ["server.sock"]
        outputs = ["out.txt"]
    """)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(ws.root / "server.sock"))
        result = ws.nxrun("run", "app:build", timeout=60)
    finally:
        server.close()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "app:build" in result.stderr and "server.sock" in result.stderr and "socket" in result.stderr


def _without_root_file_access() -> None:
    """Drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so a root nxrun (CI,
    containers) obeys file permissions the way any other user's does."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):        # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:     # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_input_file_or_folder_names_the_task_and_the_path(ws: Workspace):
    ws.write("nxrun.toml", DEFAULT_INPUTS)
    if os.geteuid() == 0:      # root reads everything: run nxrun without the capabilities that allow it
        plain_nxrun = ws.nxrun
        ws.nxrun = lambda *args, **kwargs: plain_nxrun(*args, preexec_fn=_without_root_file_access, **kwargs)
    secret = ws.write("src/secret.key", "k\n")
    secret.chmod(0o000)
    try:
        result = ws.nxrun("run", "app:build", timeout=60)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "app:build" in result.stderr and "src/secret.key" in result.stderr
        assert "ermission denied" in result.stderr
    finally:
        secret.chmod(0o644)
    private = ws.root / "private"
    ws.write("private/notes.txt", "n\n")
    private.chmod(0o000)
    try:
        result = ws.nxrun("run", "app:build", timeout=60)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "app:build" in result.stderr and "'private'" in result.stderr
        assert "ermission denied" in result.stderr
    finally:
        private.chmod(0o755)
    assert ws.nxrun("run", "app:build", timeout=60).returncode == 0
