"""Env values, values a target sets and args after `--` enter the ETag through a keyed hash: what
`show`, `why`, `history` and the index keep reveals nothing a brute force over the values finds."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time

import pytest

from brute_force import PINS, etag_candidates, matching_candidates
from cli_workspace import Workspace

CONFIG = """
[projects.p.targets.deploy]
command = "echo deploying > out.txt"
inputs  = ["env:PIN", "src.txt"]
outputs = ["out.txt"]
env     = { REGION_PIN = "7315" }
"""


def _index_text(cache_dir) -> str:
    index = sqlite3.connect(cache_dir / "index.db")
    try:
        return "\n".join(index.iterdump())
    finally:
        index.close()


def test_show_why_history_and_index_reveal_no_env_value_or_arg(ws: Workspace):
    ws.write("nxrun.toml", CONFIG)
    ws.write("src.txt", "v1\n")
    env = {"PIN": "4821"}
    first = ws.run_json("p:deploy", "--", "9034", env=env)
    assert ws.statuses(first) == {"p:deploy": "miss"}
    assert ws.statuses(ws.run_json("p:deploy", "--", "9034", env=env)) == {"p:deploy": "local-hit"}
    assert ws.statuses(ws.run_json("p:deploy", "--", "9034", env={"PIN": "4822"})) == {"p:deploy": "miss"}

    shown = json.loads(ws.nxrun("show", "p:deploy", "--json", env=env, check=True).stdout)
    texts = {
        "show": ws.nxrun("show", "p:deploy", env=env, check=True).stdout + json.dumps(shown),
        "why": ws.nxrun("why", "p:deploy", env=env, check=True).stdout,
        "history": ws.nxrun("history", env=env, check=True).stdout
        + ws.nxrun("history", "--json", env=env, check=True).stdout
        + ws.nxrun("history", "p:deploy", "--json", env=env, check=True).stdout,
        "index": _index_text(ws.root / ".nxrun"),
    }
    for where, text in texts.items():
        for secret in ("4821", "4822", "9034", "7315"):
            # as a value of its own: four digits also turn up by chance inside hex digests and times
            assert not re.search(rf"(?<![0-9A-Za-z.]){secret}(?![0-9A-Za-z])", text), f"{secret} in clear in {where}"
        assert matching_candidates(text, PINS) == [], f"an unkeyed digest of a PIN in {where}"
    assert "1 arg" in texts["history"]          # the run is listed, its args are not

    # the explain manifest and ETag of the recorded run do not let the PIN be recomputed either
    index = sqlite3.connect(ws.root / ".nxrun" / "index.db")
    try:
        recorded = index.execute("SELECT e.etag, e.explain FROM explains e JOIN entries USING (etag)").fetchall()
    finally:
        index.close()
    assert recorded
    for etag, explain in recorded:
        assert etag_candidates(json.loads(explain), etag, "env:PIN", PINS) == []
    assert etag_candidates(shown["components"], shown["etag"], "env:PIN", PINS) == []


def test_workspaces_sharing_a_cache_share_env_keyed_etags_and_other_caches_do_not(tmp_path):
    shared = tmp_path / "shared-cache"
    spaces = []
    for name in ("one", "two", "three"):
        space = Workspace(tmp_path / name)
        space.write("nxrun.toml", CONFIG)
        space.write("src.txt", "v1\n")
        spaces.append(space)
    one, two, three = spaces
    env = {"PIN": "4821", "NXRUN_CACHE_DIR": str(shared)}
    assert one.statuses(one.run_json("p:deploy", env=env)) == {"p:deploy": "miss"}
    assert two.statuses(two.run_json("p:deploy", env=env)) == {"p:deploy": "local-hit"}

    def etag(space, environ):
        return json.loads(space.nxrun("show", "p:deploy", "--json", env=environ, check=True).stdout)["etag"]

    assert etag(one, env) == etag(two, env)
    own_cache = {"PIN": "4821", "NXRUN_CACHE_DIR": str(tmp_path / "own-cache")}
    assert etag(three, own_cache) != etag(one, env)       # another cache, another key
    assert etag(three, own_cache) == etag(three, own_cache)
    # one team secret makes separate caches agree
    team = {"NXRUN_ENV_KEY": "correct horse battery staple"}
    assert etag(three, own_cache | team) == etag(one, env | team) != etag(one, env)


def _key_file_replaced_by(ws: Workspace, how: str, tmp_path) -> object:
    """Put something other than a key where the cache's key file is; returns what must survive."""
    key_file = ws.root / ".nxrun" / "keys" / "cache"
    key_file.unlink()
    if how == "fifo":
        os.mkfifo(key_file)
        return None
    target = tmp_path / "not-a-key.txt"
    target.write_text("precious\n")
    key_file.symlink_to(target)
    return target


@pytest.mark.parametrize("how", ["fifo", "symlink"])
def test_a_key_file_that_is_not_a_file_is_replaced_at_once_never_read_through(ws: Workspace, tmp_path, how):
    """A fifo in the key file's place hung every run with env inputs (opening it waits for a
    writer); a symlink made each run wait 5 s for a key that never came, then the link was
    replaced. Neither is read or written through: a new key is made at once."""
    ws.write("nxrun.toml", CONFIG)
    ws.write("src.txt", "v1\n")
    ws.run_json("p:deploy", env={"PIN": "4821"})
    survivor = _key_file_replaced_by(ws, how, tmp_path)
    started = time.monotonic()
    result = ws.nxrun("run", "--json", "p:deploy", env={"PIN": "4821"}, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 4, f"took {elapsed:.1f}s"
    key_file = ws.root / ".nxrun" / "keys" / "cache"
    assert key_file.is_file() and not key_file.is_symlink() and len(key_file.read_text().strip()) == 64
    if survivor is not None:
        assert survivor.read_text() == "precious\n"
    assert ws.statuses(ws.run_json("p:deploy", env={"PIN": "4821"})) == {"p:deploy": "local-hit"}
