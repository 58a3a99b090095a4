"""Env values on a shared remote: every machine keys them with the same secret (NXRUN_ENV_KEY, or
the key the remote keeps), so tasks with env inputs still hit across machines, while nothing
uploaded lets a brute force over the values find them."""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

from remote_helpers import fresh_clone, nxrun

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from brute_force import PINS, etag_candidates, matching_candidates  # noqa: E402

CONFIG = """
[remote]
url = "{url}"
connect-timeout = 5
read-timeout = 10

[projects.p.targets.deploy]
command = "echo p:deploy >> \\"$NXRUN_TEST_RUNLOG\\"; echo deployed > out.txt"
inputs  = ["env:PIN", "src.txt"]
outputs = ["out.txt"]
env     = {{ REGION_PIN = "7315" }}
"""


def _workspace(root: Path, url: str) -> Path:
    root.mkdir(parents=True)
    (root / "nxrun.toml").write_text(CONFIG.format(url=url))
    (root / "src.txt").write_text("v1\n")
    return root


def _uploaded_manifests(remote) -> list[dict]:
    return [json.loads(remote.get(key)) for key in remote.keys("trusted/entries")]


def test_two_machines_hit_each_other_on_an_env_input_with_the_remote_s_key(remote, tmp_path):
    a = _workspace(tmp_path / "machine-a", remote.url)
    env = {"PIN": "4821"}
    for looking in (["show", "p:deploy"], ["why", "p:deploy"], ["run", "--dry-run", "p:deploy"]):
        assert nxrun(a, *looking, env=env, endpoint=remote.endpoint).returncode == 0
    assert remote.keys() == []                           # looking makes no key
    first = nxrun(a, "run", "p:deploy", "--json", "--", "9034", env=env, endpoint=remote.endpoint)
    assert first.returncode == 0, first.stderr
    assert first.ran == ["p:deploy"]
    assert "env-key" in remote.keys()                    # created once, write-once, by the first writer

    b = fresh_clone(a, tmp_path / "elsewhere" / "machine-b")
    second = nxrun(b, "run", "p:deploy", "--json", "--", "9034", env=env, endpoint=remote.endpoint)
    assert second.returncode == 0, second.stderr
    assert second.counts == {"remote-hit": 1} and second.ran == []
    # the key is kept in each local cache: `show` and `why` need no request to compute the same ETag
    shown_b = json.loads(nxrun(b, "show", "p:deploy", "--json", env=env).stdout)
    shown_a = json.loads(nxrun(a, "show", "p:deploy", "--json", env=env).stdout)
    assert shown_a["etag"] == shown_b["etag"]
    assert nxrun(b, "run", "p:deploy", "--json", env={"PIN": "4822"}, endpoint=remote.endpoint).ran == ["p:deploy"]

    manifests = _uploaded_manifests(remote)
    assert len(manifests) == 2
    text = json.dumps(manifests) + "\n".join(remote.keys())
    for secret in ("4821", "4822", "9034", "7315"):
        # as a value of its own: four digits also turn up by chance inside the hex digests, which change
        # with every run's random key (about one run in ten failed on that)
        assert not re.search(rf"(?<![0-9A-Za-z.]){secret}(?![0-9A-Za-z])", text), f"{secret} in clear"
    assert matching_candidates(text, PINS) == []
    for manifest in manifests:
        assert etag_candidates(manifest["explain"], manifest["etag"], "env:PIN", PINS) == []


def test_machines_racing_to_create_the_remote_s_key_agree_on_one(remote, tmp_path):
    first = [_workspace(tmp_path / f"racer-{i}", remote.url) for i in range(3)]
    results = {}

    def run(root):
        results[root] = nxrun(root, "run", "p:deploy", "--json", env={"PIN": "1"}, endpoint=remote.endpoint)

    threads = [threading.Thread(target=run, args=(root,)) for root in first]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.returncode == 0 for r in results.values()), [r.stderr for r in results.values()]
    etags = {json.loads(nxrun(root, "show", "p:deploy", "--json", env={"PIN": "1"}).stdout)["etag"]
             for root in first}
    assert len(etags) == 1
    late = fresh_clone(first[0], tmp_path / "late")
    assert nxrun(late, "run", "p:deploy", "--json", env={"PIN": "1"}, endpoint=remote.endpoint).counts == \
        {"remote-hit": 1}


def test_a_team_secret_keys_env_values_without_a_key_in_the_remote(remote, tmp_path):
    a = _workspace(tmp_path / "a", remote.url)
    team = {"PIN": "4821", "NXRUN_ENV_KEY": "a secret the team's CI sets"}
    assert nxrun(a, "run", "p:deploy", env=team, endpoint=remote.endpoint).ran == ["p:deploy"]
    assert "env-key" not in remote.keys()
    b = fresh_clone(a, tmp_path / "b")
    assert nxrun(b, "run", "p:deploy", "--json", env=team, endpoint=remote.endpoint).counts == {"remote-hit": 1}
    other = fresh_clone(a, tmp_path / "other")
    wrong = team | {"NXRUN_ENV_KEY": "another secret"}
    assert nxrun(other, "run", "p:deploy", "--json", env=wrong, endpoint=remote.endpoint).ran == ["p:deploy"]


def test_a_read_only_job_before_any_key_exists_runs_with_its_own_key_and_says_so(remote, tmp_path):
    reader = _workspace(tmp_path / "reader", remote.url)
    result = nxrun(reader, "run", "p:deploy", "--json", env={"PIN": "1", "NXRUN_REMOTE_READ_ONLY": "1"},
                   endpoint=remote.endpoint)
    assert result.returncode == 0, result.stderr
    assert result.ran == ["p:deploy"]
    assert "NXRUN_ENV_KEY" in result.stderr and remote.keys() == []
    writer = fresh_clone(reader, tmp_path / "writer")
    assert nxrun(writer, "run", "p:deploy", env={"PIN": "1"}, endpoint=remote.endpoint).ran == ["p:deploy"]
    again = nxrun(reader, "run", "p:deploy", "--json", env={"PIN": "1", "NXRUN_REMOTE_READ_ONLY": "1"},
                  endpoint=remote.endpoint)
    assert again.counts == {"remote-hit": 1}, again.stderr
