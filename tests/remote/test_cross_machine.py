"""Machines sharing one S3 cache: what one uploads, another restores without running anything."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from remote_helpers import REPO, fresh_clone, nxrun, tree, write_pipeline
from weed_server import make_client

ALL = ["gen:data", "gen:build", "gen:report"]


def test_fresh_clone_restores_every_task_from_remote_with_nothing_executed(remote, tmp_path):
    a = write_pipeline(tmp_path / "machine-a", remote.url)
    first = nxrun(a, "run", "gen:report", "--json", endpoint=remote.endpoint)
    assert first.returncode == 0, first.stderr
    assert first.ran == ALL
    assert first.summary["remote"]["uploads"] == 3
    assert len(remote.keys("trusted/entries")) == 3

    b = fresh_clone(a, tmp_path / "elsewhere" / "machine-b")
    second = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    assert second.returncode == 0, second.stderr
    assert second.ran == []
    assert second.counts == {"remote-hit": 3}
    assert tree(a) == tree(b)                       # bytes, modes, symlinks, empty folders alike
    assert "generated 4 entries" in second.stderr   # the log is replayed

    third = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    assert third.counts == {"local-hit": 3}         # written through to the local cache


def test_downstream_only_change_runs_only_the_downstream_task(remote, tmp_path):
    a = write_pipeline(tmp_path / "a", remote.url)
    assert nxrun(a, "run", "gen:report", endpoint=remote.endpoint).returncode == 0
    b = fresh_clone(a, tmp_path / "b")
    (b / "src" / "report.txt").write_text("a different footer\n")
    result = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.ran == ["gen:report"]
    assert result.statuses() == {"gen:data": "remote-hit", "gen:build": "remote-hit", "gen:report": "miss"}
    assert (b / "out" / "report.txt").read_text().endswith("a different footer\n")


def test_large_output_goes_through_multipart_transfers(remote, tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    (root / "nxrun.toml").write_text(f"""
[remote]
url = "{remote.url}"

[projects.big.targets.blob]
command = "python3 -c \\"import os; open('big.bin','wb').write(os.urandom(40 << 20))\\""
inputs  = []
outputs = ["big.bin"]
""")
    assert nxrun(root, "run", "big:blob", endpoint=remote.endpoint).returncode == 0
    client = make_client(remote.endpoint)
    try:
        blobs = client.list_objects_v2(Bucket=remote.bucket, Prefix="cache/trusted/blobs/")["Contents"]
        assert max(o["Size"] for o in blobs) == 40 << 20
        big_key = max(blobs, key=lambda o: o["Size"])["Key"]
        assert "-" in client.head_object(Bucket=remote.bucket, Key=big_key)["ETag"]   # a multipart upload
    finally:
        client.close()
    b = fresh_clone(root, tmp_path / "big-b")
    (b / "big.bin").unlink()
    result = nxrun(b, "run", "big:blob", "--json", endpoint=remote.endpoint)
    assert result.counts == {"remote-hit": 1}
    assert (b / "big.bin").read_bytes() == (root / "big.bin").read_bytes()


def test_two_machines_uploading_the_same_etag_at_once_leave_one_entry(remote, tmp_path):
    a1 = write_pipeline(tmp_path / "a1", remote.url)
    a2 = fresh_clone(a1, tmp_path / "a2")
    results = {}

    def run(name, root):
        results[name] = nxrun(root, "run", "gen:report", "--json", endpoint=remote.endpoint)

    threads = [threading.Thread(target=run, args=(n, r)) for n, r in (("a1", a1), ("a2", a2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results.values():
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr.lower()
    entries = remote.keys("trusted/entries")
    assert len(entries) == 3
    for key in entries:
        assert json.loads(remote.get(key))["etag"] in key
    b = fresh_clone(a1, tmp_path / "b")
    assert nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint).counts == {"remote-hit": 3}


def test_write_once_put_has_exactly_one_winner(remote):
    from nxrun.store.s3 import S3Backend, S3Location

    backend = S3Backend(S3Location(remote.bucket, "cache"), endpoint_url=remote.endpoint, region="us-east-1",
                        connect_timeout=10, read_timeout=60, max_concurrency=8)
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testkey")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testsecret")
    outcomes = []
    barrier = threading.Barrier(8)

    def put(i):
        barrier.wait()
        outcomes.append(backend.put_if_absent("cache/race/key", f"writer {i}".encode()))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    backend.close()
    assert outcomes.count(True) >= 1 and len(outcomes) == 8
    assert remote.get("race/key").startswith(b"writer ")
    # once it exists, every later conditional write is refused
    backend2 = S3Backend(S3Location(remote.bucket, "cache"), endpoint_url=remote.endpoint, region="us-east-1",
                         connect_timeout=2, read_timeout=5, max_concurrency=2)
    assert backend2.put_if_absent("cache/race/key", b"late") is False
    backend2.close()


def test_dry_run_predicts_remote_hits_without_downloading_blobs(remote, tmp_path):
    a = write_pipeline(tmp_path / "a", remote.url)
    assert nxrun(a, "run", "gen:report", endpoint=remote.endpoint).returncode == 0
    b = fresh_clone(a, tmp_path / "b")
    result = nxrun(b, "run", "gen:report", "--dry-run", "--json", endpoint=remote.endpoint)
    assert result.counts == {"predicted-hit": 3}
    assert result.ran == []
    assert not (b / ".nxrun" / "blobs").exists() or not any((b / ".nxrun" / "blobs").iterdir())
    assert not (b / "out").exists()


def test_push_pull_stats_show_and_why_say_where_hits_came_from(remote, tmp_path):
    a = write_pipeline(tmp_path / "a", remote.url)
    assert nxrun(a, "run", "gen:report", "--remote=off", endpoint=remote.endpoint).returncode == 0
    assert remote.keys() == []
    pushed = nxrun(a, "cache", "push", "gen:data", "gen:build", "gen:report", endpoint=remote.endpoint)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.count("pushed") == 3
    assert len(remote.keys("trusted/entries")) == 3

    b = fresh_clone(a, tmp_path / "b")
    pulled = nxrun(b, "cache", "pull", "gen:data", endpoint=remote.endpoint)
    assert "pulled" in pulled.stdout, pulled.stderr
    result = nxrun(b, "run", "gen:report", "--json", endpoint=remote.endpoint)
    assert result.statuses() == {"gen:data": "local-hit", "gen:build": "remote-hit", "gen:report": "remote-hit"}

    stats = json.loads(nxrun(b, "cache", "stats", "--json").stdout)
    assert stats["remote_hits"] == 2
    assert stats["entries_by_origin"] == {"remote": 3}
    assert stats["remote"]["hits"] == 3 and stats["remote"]["bytes_down"] > 0
    assert "remote     3 hits" in nxrun(b, "cache", "stats").stdout
    assert "cached (remote)" in nxrun(b, "show", "gen:build").stdout
    why = nxrun(b, "why", "gen:build")
    assert "from the remote cache" in why.stdout, why.stdout


def test_remote_off_and_version_never_import_boto3(remote, tmp_path):
    code = ("import sys; from nxrun.cli import main; sys.argv = ['nxrun', '--version'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'")
    check = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    a = write_pipeline(tmp_path / "a", remote.url)
    result = nxrun(a, "run", "gen:report", "--json", "--remote=off", endpoint=remote.endpoint)
    assert result.returncode == 0 and result.summary["remote"] == {}
    assert remote.keys() == []
