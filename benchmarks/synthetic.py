"""Generate synthetic workspaces for the runner benchmarks.

Three shapes of one workload, N tasks in a binary tree (task i reads a ~4 KiB input and the
output of task (i-1)//2, and writes one output file with a tiny shell command; `tree:all`
depends on every task):

- `onefile`: every task in the root nxrun.toml, with explicit inputs (in/i.txt -> out/i.txt);
- `packages`: one project folder per task (packages/p<i>/, each with its own nxrun.toml, as Nx and
  Turborepo users lay out a monorepo), default inputs (`**/*` of the project: its nxrun.toml and
  src/in.txt), output dist/out.txt, `depends-on = ["^build"]` on the project it depends on;
- `deep`: one task whose output is a folder tree (by default 6,000 files in 2,000 nested folders).

`dodo` writes the `onefile` workload for doit (https://pydoit.org): the same commands, file_dep
and targets, so doit and nxrun can be timed on the same work.

    python benchmarks/synthetic.py DIR --tasks 500 [--layout onefile|packages|deep|dodo]
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
from pathlib import Path

LAYOUTS = ("onefile", "packages", "deep", "dodo")


def _inputs(root: Path, folder_of, tasks: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(tasks):
        path = root / folder_of(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(3072).hex()[:4096].encode())


def generate(root: Path, tasks: int, parallel: int = 4, seed: int = 0) -> None:
    """The one-file layout: every task in the root nxrun.toml, explicit inputs."""
    root.mkdir(parents=True, exist_ok=True)
    _inputs(root, lambda i: f"in/{i}.txt", tasks, seed)
    lines = ["[workspace]", f"parallel = {parallel}", ""]
    for i in range(tasks):
        parent = (i - 1) // 2
        reads = f"in/{i}.txt" + (f" out/{parent}.txt" if i else "")
        lines += [f"[projects.tree.targets.t{i}]",
                  f'command = "cat {reads} | cksum > out/{i}.txt"',
                  f'inputs = ["in/{i}.txt"]',
                  f'outputs = ["out/{i}.txt"]']
        if i:
            lines.append(f'depends-on = ["t{parent}"]')
        lines.append("")
    lines += ["[projects.tree.targets.all]",
              "depends-on = [" + ", ".join(f'"t{i}"' for i in range(tasks)) + "]", ""]
    (root / "nxrun.toml").write_text("\n".join(lines))
    (root / "out").mkdir(exist_ok=True)


def generate_packages(root: Path, tasks: int, parallel: int = 4, seed: int = 0, shared: int = 0) -> None:
    """One project folder per task (`projects = ["packages/*"]`), default inputs; with `shared`,
    that many workspace files (shared/, as a lockfile or a base tsconfig) in every task's inputs."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(shared):
        (root / "shared").mkdir(exist_ok=True)
        (root / "shared" / f"s{k}.txt").write_text(f"shared {k}\n")
    _inputs(root, lambda i: f"packages/p{i}/src/in.txt", tasks, seed)
    for i in range(tasks):
        parent = (i - 1) // 2
        reads = "src/in.txt" + (f" ../p{parent}/dist/out.txt" if i else "")
        lines = ["[project]"]
        if i:
            lines.append(f'depends-on = ["p{parent}"]')
        lines += ["", "[targets.build]",
                  f'command = "cat {reads} | cksum > dist/out.txt"',
                  'outputs = ["dist/out.txt"]']
        if i:
            lines.append('depends-on = ["^build"]')
        folder = root / "packages" / f"p{i}"
        (folder / "nxrun.toml").write_text("\n".join(lines) + "\n")
        (folder / "dist").mkdir(exist_ok=True)
    lines = ["[workspace]", f"parallel = {parallel}", 'projects = ["packages/*"]']
    if shared:
        lines.append('default-inputs = ["**/*", "{workspace}/shared/**/*"]')
    lines += ["",
             "[projects.tree.targets.all]",
             "depends-on = [" + ", ".join(f'"p{i}:build"' for i in range(tasks)) + "]", ""]
    (root / "nxrun.toml").write_text("\n".join(lines))


DEEP_SCRIPT = '''\
"""Write {files} files into {folders} nested folders under out/ (folder k lies in folder (k-1)//8)."""
import os
import sys

FOLDERS, FILES = {folders}, {files}
paths = ["out"]
for k in range(1, FOLDERS):
    paths.append(os.path.join(paths[(k - 1) // 8], f"d{{k}}"))
for path in paths:
    os.makedirs(path, exist_ok=True)
for n in range(FILES):
    with open(os.path.join(paths[n % FOLDERS], f"f{{n}}.txt"), "w") as handle:
        handle.write(f"file {{n}}\\n" * (1 + n % 7))
'''


def generate_deep(root: Path, files: int = 6000, folders: int = 2000, restore: str = "auto",
                  parallel: int = 4) -> None:
    """One task whose output is a tree of `files` files in `folders` nested folders (out/ counted)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "gen.py").write_text(DEEP_SCRIPT.format(files=files, folders=folders))
    python = shlex.quote(sys.executable)
    (root / "nxrun.toml").write_text(
        f'[workspace]\nparallel = {parallel}\nrestore = "{restore}"\n\n[projects.deep.targets.gen]\n'
        f'command = "{python} gen.py"\ninputs = ["gen.py"]\noutputs = ["out"]\n')


DODO = '''\
"""The binary-tree workload of benchmarks/synthetic.py for doit."""

DOIT_CONFIG = {{"verbosity": 0, "default_tasks": ["t"]}}
TASKS = {tasks}


def task_t():
    for i in range(TASKS):
        deps = [f"in/{{i}}.txt"] + ([f"out/{{(i - 1) // 2}}.txt"] if i else [])
        yield {{"name": str(i), "actions": [f"cat {{' '.join(deps)}} | cksum > out/{{i}}.txt"],
               "file_dep": deps, "targets": [f"out/{{i}}.txt"]}}
'''


def generate_dodo(root: Path, tasks: int, seed: int = 0) -> None:
    """The one-file workload (same inputs, commands and outputs) as a doit dodo.py."""
    root.mkdir(parents=True, exist_ok=True)
    _inputs(root, lambda i: f"in/{i}.txt", tasks, seed)
    (root / "dodo.py").write_text(DODO.format(tasks=tasks))
    (root / "out").mkdir(exist_ok=True)


def leaf_input(root: Path, layout: str, index: int) -> Path:
    """The input file of task `index` in a workspace of `layout` (onefile, packages or dodo)."""
    return root / (f"packages/p{index}/src/in.txt" if layout == "packages" else f"in/{index}.txt")


def touch_input(root: Path, index: int, salt: str, layout: str = "onefile") -> None:
    path = leaf_input(root, layout, index)
    data = path.read_bytes()
    path.write_bytes(salt.encode() + data[len(salt):])
    os.utime(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--layout", choices=LAYOUTS, default="onefile")
    parser.add_argument("--shared", type=int, default=0, help="packages layout: shared input files")
    parser.add_argument("--files", type=int, default=6000, help="deep layout: output files")
    parser.add_argument("--folders", type=int, default=2000, help="deep layout: output folders")
    args = parser.parse_args()
    if args.layout == "onefile":
        generate(args.dir, args.tasks, args.parallel)
    elif args.layout == "packages":
        generate_packages(args.dir, args.tasks, args.parallel, shared=args.shared)
    elif args.layout == "dodo":
        generate_dodo(args.dir, args.tasks)
    else:
        generate_deep(args.dir, args.files, args.folders, parallel=args.parallel)
    what = f"{args.files} output files" if args.layout == "deep" else f"{args.tasks} tasks"
    print(f"wrote a {args.layout} workspace of {what} to {args.dir}")
