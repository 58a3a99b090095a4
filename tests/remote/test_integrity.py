"""Everything read from the remote is untrusted: tampered blobs and manifests, paths that leave
the workspace, setuid bits and bad signatures are rejected whole, nothing is written outside the
workspace, and the task runs instead."""

from __future__ import annotations

import json

import pytest

from tree_snapshot import snapshot

from remote_helpers import fresh_clone, nxrun, tree, write_pipeline


def _entry_of(remote, task_id: str) -> tuple[str, dict]:
    for key in remote.keys("trusted/entries"):
        manifest = json.loads(remote.get(key))
        if manifest["task_id"] == task_id:
            return key, manifest
    raise AssertionError(f"no entry of {task_id} on the remote")


def _record(manifest: dict, path: str) -> dict:
    return next(o for o in manifest["outputs"] if o["path"] == path)


@pytest.fixture
def uploaded(remote, tmp_path):
    a = write_pipeline(tmp_path / "a", remote.url)
    assert nxrun(a, "run", "gen:report", endpoint=remote.endpoint).returncode == 0
    return a


def _assert_rerun_cleanly(a, b, result, task_id="gen:data"):
    assert result.returncode == 0, result.stderr
    assert task_id in result.ran
    assert tree(a) == tree(b)


def test_tampered_blob_rejects_the_entry_and_the_task_runs(remote, uploaded, tmp_path):
    _, manifest = _entry_of(remote, "gen:data")
    digest = _record(manifest, "out/data/a.txt")["digest"]
    original = remote.get(f"trusted/blobs/{digest}")
    remote.put(f"trusted/blobs/{digest}", original.swapcase())       # same size, other bytes
    b = fresh_clone(uploaded, tmp_path / "b")
    result = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    _assert_rerun_cleanly(uploaded, b, result)
    assert result.ran == ["gen:data"]        # identical outputs again: downstream still hits the remote
    assert result.statuses()["gen:build"] == "remote-hit"
    assert "does not hash to its name" in result.stderr
    assert result.summary["remote"]["rejected"] == 1


def test_blob_longer_than_its_entry_says_is_rejected(remote, uploaded, tmp_path):
    _, manifest = _entry_of(remote, "gen:data")
    digest = _record(manifest, "out/data/sub/blob.bin")["digest"]
    remote.put(f"trusted/blobs/{digest}", remote.get(f"trusted/blobs/{digest}") * 50)
    b = fresh_clone(uploaded, tmp_path / "b")
    result = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    _assert_rerun_cleanly(uploaded, b, result)
    assert "larger than its entry says" in result.stderr


def test_unreadable_manifest_is_a_miss(remote, uploaded, tmp_path):
    key, _ = _entry_of(remote, "gen:data")
    remote.put(key, b"{not json")
    b = fresh_clone(uploaded, tmp_path / "b")
    result = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    _assert_rerun_cleanly(uploaded, b, result)
    assert "rejected" in result.stderr


def _escape_variants(manifest: dict) -> dict[str, dict]:
    good = _record(manifest, "out/data/a.txt")
    variants = {}

    def variant(name, change):
        copy = json.loads(json.dumps(manifest))
        change(copy)
        variants[name] = copy

    variant("dotdot", lambda m: m["outputs"].append(dict(good, path="out/data/../../../escape.txt")))
    variant("absolute", lambda m: m["outputs"].append(dict(good, path="/tmp/nxrun-escape.txt")))
    variant("declared-dotdot", lambda m: (m["declared_outputs"].append(".."),
                                          m["outputs"].append(dict(good, path="../escape.txt"))))
    variant("outside-declared", lambda m: m["outputs"].append(dict(good, path="src/report.txt")))
    variant("symlink-out", lambda m: m["outputs"].append(
        {"path": "out/data/evil", "kind": "symlink", "digest": None, "size": 0, "mode": 0o777,
         "target": "../../../../escape-dir"}))
    variant("setuid", lambda m: _record(m, "out/data/run.sh").update(mode=0o4755))
    return variants


@pytest.mark.parametrize("variant", ["dotdot", "absolute", "declared-dotdot", "outside-declared",
                                     "symlink-out", "setuid"])
def test_entry_leaving_its_outputs_is_rejected_whole(remote, uploaded, tmp_path, variant):
    key, manifest = _entry_of(remote, "gen:data")
    remote.put(key, json.dumps(_escape_variants(manifest)[variant]).encode())
    b = fresh_clone(uploaded, tmp_path / "machines" / "b")
    result = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    _assert_rerun_cleanly(uploaded, b, result)
    assert "rejected" in result.stderr
    assert sorted(p.name for p in (tmp_path / "machines").iterdir()) == ["b"]
    assert not (tmp_path / "escape.txt").exists()
    assert not list(tmp_path.glob("**/escape*"))
    assert not (b / "out" / "data" / "evil").exists()
    assert (b / "src" / "report.txt").read_text() == "report footer\n"
    assert not ((b / "out" / "data" / "run.sh").stat().st_mode & 0o6000)


def test_signed_entries_restore_with_the_same_key(remote, tmp_path):
    key = {"NXRUN_SIGNING_KEY": "team-secret"}
    a = write_pipeline(tmp_path / "a", remote.url)
    assert nxrun(a, "run", "gen:report", env=key, endpoint=remote.endpoint).returncode == 0
    _, manifest = _entry_of(remote, "gen:data")
    assert len(manifest["signature"]) == 64
    b = fresh_clone(a, tmp_path / "b")
    assert nxrun(b, "run", "gen:report", "--json", env=key, endpoint=remote.endpoint).counts == {"remote-hit": 3}


@pytest.mark.parametrize("writer_key", [None, "another-secret"], ids=["unsigned", "forged"])
def test_unsigned_or_forged_entries_are_misses_when_a_key_is_set(remote, tmp_path, writer_key):
    a = write_pipeline(tmp_path / "a", remote.url)
    env = {"NXRUN_SIGNING_KEY": writer_key} if writer_key else {}
    assert nxrun(a, "run", "gen:report", env=env, endpoint=remote.endpoint).returncode == 0
    b = fresh_clone(a, tmp_path / "b")
    result = nxrun(b, "run", "gen:report", "--json", env={"NXRUN_SIGNING_KEY": "team-secret"},
                   endpoint=remote.endpoint)
    _assert_rerun_cleanly(a, b, result)
    assert result.ran == ["gen:data", "gen:build", "gen:report"]
    assert ("not signed" if writer_key is None else "signature does not match") in result.stderr
    assert result.summary["remote"]["rejected"] == 3


def test_tampered_signed_manifest_is_a_miss(remote, tmp_path):
    key = {"NXRUN_SIGNING_KEY": "team-secret"}
    a = write_pipeline(tmp_path / "a", remote.url)
    assert nxrun(a, "run", "gen:report", env=key, endpoint=remote.endpoint).returncode == 0
    entry_key, manifest = _entry_of(remote, "gen:data")
    # point a.txt at another valid blob: every blob still hashes to its name, only the signature catches it
    _record(manifest, "out/data/a.txt").update(digest=_record(manifest, "out/data/sub/blob.bin")["digest"],
                                               size=_record(manifest, "out/data/sub/blob.bin")["size"])
    remote.put(entry_key, json.dumps(manifest).encode())
    b = fresh_clone(a, tmp_path / "b")
    result = nxrun(b, "run", "gen:report", "--json", env=key, endpoint=remote.endpoint)
    _assert_rerun_cleanly(a, b, result)
    assert result.ran == ["gen:data"]
    assert "signature does not match" in result.stderr


def _chain(depth: int) -> list[dict]:
    """out/data/l0 -> .., l1 -> l0/.., ...: each link climbs one folder more, through the one before
    (l1 is the workspace root, l2 the folder above it)."""
    links = [{"path": "out/data/l0", "kind": "symlink", "digest": None, "size": 0, "mode": 0o777, "target": ".."}]
    for i in range(1, depth + 1):
        links.append({"path": f"out/data/l{i}", "kind": "symlink", "digest": None, "size": 0, "mode": 0o777,
                      "target": f"l{i - 1}/.."})
    return links


CHAINS = {
    "above the workspace": (2, "l2/planted.txt", 0o644),
    "git hook": (1, "l1/.git/hooks/pre-commit", 0o755),
    "nxrun.toml": (1, "l1/nxrun.toml", 0o644),
}


@pytest.mark.parametrize("order", ["links first", "file first"])
@pytest.mark.parametrize("aim", list(CHAINS))
def test_entry_writing_through_a_chain_of_its_own_links_is_rejected(remote, uploaded, tmp_path, aim, order):
    key, manifest = _entry_of(remote, "gen:data")
    depth, planted, mode = CHAINS[aim]
    script = _record(manifest, "out/data/run.sh")        # an executable blob that exists on the remote
    file_record = dict(script, path=f"out/data/{planted}", mode=mode)
    records = _chain(depth) + [file_record] if order == "links first" else [file_record] + _chain(depth)
    manifest["outputs"] = records + manifest["outputs"]
    remote.put(key, json.dumps(manifest).encode())
    b = fresh_clone(uploaded, tmp_path / "machines" / "b")
    (b / ".git" / "hooks").mkdir(parents=True)
    outputs = [b / "out", b / ".nxrun", b / "runlog"]
    before = snapshot(tmp_path / "machines", outputs)
    result = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    _assert_rerun_cleanly(uploaded, b, result)
    assert "from 'trusted' rejected: gen:data: " in result.stderr
    assert "the task will run instead" in result.stderr
    assert result.summary["remote"]["rejected"] == 1
    assert snapshot(tmp_path / "machines", outputs) == before
    assert not (b / ".git" / "hooks" / "pre-commit").exists()
    assert (b / "nxrun.toml").read_text() == (uploaded / "nxrun.toml").read_text()
    assert not list((tmp_path / "machines").glob("planted*"))


def test_remote_entry_is_not_written_through_a_link_above_the_outputs(remote, uploaded, tmp_path):
    b = fresh_clone(uploaded, tmp_path / "b")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (b / "out").symlink_to(elsewhere)                  # a link this machine made above the outputs
    result = nxrun(b, "run", "gen:data", "--json", endpoint=remote.endpoint)
    assert result.returncode == 0, result.stderr
    assert "'out', a folder above a declared output, is a link on this machine" in result.stdout + result.stderr
    assert result.ran == ["gen:data"]                  # the task ran instead (and wrote through its link)
    assert (elsewhere / "data" / "a.txt").read_text() == "SOME INPUT\n"
