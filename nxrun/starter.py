"""The nxrun.toml that `nxrun init` writes: small, runnable, and a tour of the keys."""

STARTER = '''# nxrun workspace: every task is project:target; `nxrun graph` shows them, `nxrun run demo:report` runs one.
[workspace]
cache-dir = ".nxrun"      # local cache (blobs + sqlite index); add it to .gitignore
parallel = 4

[named-inputs]            # reusable input sets (globs relative to the workspace root; "!" excludes)
sources = ["src/**/*", "!**/__pycache__/**"]

[runtime]                 # a probe's stdout enters the ETag of tasks that list "runtime:NAME"
python = "python3 --version"

[projects.demo.targets.hello]
command = "mkdir -p out && echo hello from nxrun > out/hello.txt"
inputs  = ["runtime:python"]
outputs = ["out/hello.txt"]

[projects.demo.targets.report]
command    = "wc -c out/hello.txt > out/report.txt && cat out/report.txt"
depends-on = ["hello"]    # same project; "project:target" elsewhere; "^target" in dependency projects
inputs     = []           # upstream outputs always count; nothing else here
outputs    = ["out/report.txt"]
'''
