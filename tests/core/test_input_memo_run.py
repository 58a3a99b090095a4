"""A run looks at a shared input once while nothing writes (the input memo), but never hands a task
a digest older than a write of the same run: a command that changes another task's input, or a
restore that rewrites a file a later task reads, is seen by every task hashed after it."""

from __future__ import annotations

from cli_workspace import Workspace

COMMAND_WRITES_A_SHARED_INPUT = """
[workspace]
parallel = 1

[projects.p.targets.early]
command = "cat src/data.txt > early.out"
inputs  = ["src/**/*"]
outputs = ["early.out"]

[projects.p.targets.gen]
command = "echo new > src/data.txt"
inputs  = ["gen.txt"]
outputs = ["gen.out"]

[projects.p.targets.use]
command    = "cat src/data.txt > use.out"
depends-on = ["gen"]
inputs     = ["src/**/*"]
outputs    = ["use.out"]
"""


def test_a_command_that_changes_a_shared_input_is_seen_by_tasks_hashed_after_it(ws: Workspace) -> None:
    ws.write("nxrun.toml", COMMAND_WRITES_A_SHARED_INPUT)
    ws.write("src/data.txt", "old\n")
    ws.write("gen.txt", "g\n")
    first = ws.statuses(ws.run_json("p:early", "p:use"))
    assert first == {"p:early": "miss", "p:gen": "miss", "p:use": "miss"}
    assert ws.read("use.out") == "new\n"
    # `use` was keyed on the data its command read ("new"): with it unchanged, it is a hit now;
    # `early` read "old", so it runs again
    second = ws.statuses(ws.run_json("p:early", "p:use"))
    assert second["p:use"] == "local-hit", second
    assert second["p:early"] == "miss", second


A_RESTORE_REWRITES_AN_INPUT = """
[workspace]
parallel = 1

[projects.p.targets.peek]
command = "cat gen/out.txt > peek.out || true"
inputs  = ["gen/out.txt"]
outputs = ["peek.out"]

[projects.p.targets.gen]
command = "mkdir -p gen && cat gen.txt > gen/out.txt"
inputs  = ["gen.txt"]
outputs = ["gen"]

[projects.p.targets.use]
command    = "cat gen/out.txt > use.out"
depends-on = ["gen"]
inputs     = ["gen/out.txt"]
outputs    = ["use.out"]
"""


def test_a_restored_output_is_seen_by_tasks_hashed_after_the_restore(ws: Workspace) -> None:
    ws.write("nxrun.toml", A_RESTORE_REWRITES_AN_INPUT)
    ws.write("gen.txt", "made\n")
    ws.write("gen/out.txt", "made\n")
    ws.run_json("p:peek", "p:use")
    # an edit of gen's output: the next run hashes it for `peek`, then restores gen's entry over it,
    # and `use` must be hashed from the restored file (its ETag of the first run: a hit)
    ws.write("gen/out.txt", "edited by hand\n")
    second = ws.statuses(ws.run_json("p:peek", "p:use"))
    assert ws.read("gen/out.txt") == "made\n"
    assert second["p:gen"] == "local-hit", second
    assert second["p:use"] == "local-hit", second
