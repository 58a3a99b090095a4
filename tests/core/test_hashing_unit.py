"""Unit tests of the task hasher: keyed env digests, where their key comes from, and errors that
name the task and the path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xxhash
from brute_force import PINS, matching_candidates

from nxrun.errors import NxrunError
from nxrun.graph import Task
from nxrun.hashing import FileIndex, StatCache, TaskHasher
from nxrun.store.keys import ENV_KEY_VAR, EnvKeySource, team_key
from nxrun.store.local import LocalStore

REPO = Path(__file__).resolve().parents[2]


def _task(inputs=("env:PIN",), env=None) -> Task:
    return Task(id="p:t", project="p", target="t", matrix={}, command="make", inputs=list(inputs),
                outputs=["out"], deps=[], env=dict(env or {}), resources=[], cache="always", cwd="",
                source="nxrun.toml:3")


def _components(root: Path, key_source, task=None, args=None, environ=None) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    hasher = TaskHasher(root, FileIndex(root), StatCache(), runtime=None, env_key=key_source)
    components, _ = hasher.components(task or _task(), {}, args, environ if environ is not None else {"PIN": "4821"})
    return components


def test_env_digest_is_keyed_per_cache_and_shared_by_workspaces_of_one_cache(tmp_path):
    cache_a, cache_b = LocalStore(tmp_path / "cache-a"), LocalStore(tmp_path / "cache-b")
    one = _components(tmp_path / "ws-one", cache_a.own_key)
    two = _components(tmp_path / "ws-two", LocalStore(tmp_path / "cache-a").own_key)   # another process, one cache
    other = _components(tmp_path / "ws-one", cache_b.own_key)
    assert one["env:PIN"] != xxhash.xxh3_128_hexdigest(b"=4821")
    assert one["env:PIN"] == two["env:PIN"]
    assert one["env:PIN"] != other["env:PIN"]
    assert matching_candidates(one["env:PIN"] + " " + other["env:PIN"], PINS) == []
    unset = _components(tmp_path / "ws-one", cache_a.own_key, environ={})
    assert unset["env:PIN"] not in (one["env:PIN"], xxhash.xxh3_128_hexdigest(b"\0unset"))


def test_set_env_values_and_args_are_keyed_too(tmp_path):
    store = LocalStore(tmp_path / "cache")
    task = _task(inputs=(), env={"REGION_PIN": "7315"})
    components = _components(tmp_path / "ws", store.own_key, task=task, args=["9034"])
    assert matching_candidates(components["env-set:REGION_PIN"] + " " + components["args"], PINS) == []
    again = _components(tmp_path / "ws", store.own_key, task=task, args=["9034"])
    assert again == components
    assert _components(tmp_path / "ws", store.own_key, task=task, args=["9035"])["args"] != components["args"]


def test_the_cache_key_is_private_made_once_and_agreed_on_by_concurrent_first_runs(tmp_path):
    cache = tmp_path / "cache"
    code = "import sys; from nxrun.store.local import LocalStore; print(LocalStore(sys.argv[1]).own_key().hex())"
    processes = [subprocess.Popen([sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE, text=True,
                                  cwd=REPO) for _ in range(8)]
    keys = {p.communicate(timeout=60)[0].strip() for p in processes}
    assert all(p.returncode == 0 for p in processes)
    assert len(keys) == 1 and len(keys.pop()) == 64
    key_file = cache / "keys" / "cache"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (cache / "keys").stat().st_mode & 0o077 == 0
    assert [p.name for p in (cache / "keys").iterdir()] == ["cache"]       # no temp files left


def test_a_team_secret_wins_over_the_cache_key(tmp_path, monkeypatch):
    class NoRemote:
        remote: dict = {}

    monkeypatch.delenv("NXRUN_REMOTE", raising=False)
    store_a, store_b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    assert EnvKeySource(store_a, NoRemote())() == store_a.own_key() != store_b.own_key()
    monkeypatch.setenv(ENV_KEY_VAR, "team secret")
    assert EnvKeySource(store_a, NoRemote())() == EnvKeySource(store_b, NoRemote())() == team_key("team secret")


def test_an_input_that_vanishes_after_the_walk_names_the_task_and_the_path(tmp_path):
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("a")
    (root / "src" / "b.txt").write_text("b")
    index = FileIndex(root)
    hasher = TaskHasher(root, index, StatCache(), runtime=None)
    assert index.expand(["src/*.txt"])[0] == ["src/a.txt", "src/b.txt"]     # listed once per run ...
    (root / "src" / "b.txt").unlink()                                       # ... then gone
    with pytest.raises(NxrunError) as raised:
        hasher.components(_task(inputs=["src/*.txt"]), {})
    assert "p:t" in str(raised.value) and "'src/b.txt'" in str(raised.value) and "disappeared" in str(raised.value)


def test_a_permission_error_while_hashing_names_the_task_and_the_path(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "secret.key").write_text("k")

    def denied(path):
        raise PermissionError(13, "Permission denied", os.fspath(path))

    monkeypatch.setattr("nxrun.hashing.digest_file", denied)   # root reads every file: simulate the refusal
    hasher = TaskHasher(root, FileIndex(root), StatCache(), runtime=None)
    for inputs in (["secret.key"], ["*.key"]):
        with pytest.raises(NxrunError) as raised:
            hasher.components(_task(inputs=inputs), {})
        message = str(raised.value)
        assert "p:t" in message and "'secret.key'" in message and "permission denied" in message
        assert '"!secret.key"' in message and "nxrun.toml:3" in message
