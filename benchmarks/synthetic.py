"""Generate a synthetic workspace: N tasks in a binary tree.

Task i reads a ~4 KiB input (in/i.txt) and the output of task (i-1)//2, and writes one output file
with a tiny shell command; `tree:all` depends on every task.

    python benchmarks/synthetic.py DIR --tasks 500
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path


def generate(root: Path, tasks: int, parallel: int = 4, seed: int = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "in").mkdir(exist_ok=True)
    rng = random.Random(seed)
    lines = ["[workspace]", f"parallel = {parallel}", ""]
    for i in range(tasks):
        (root / "in" / f"{i}.txt").write_bytes(rng.randbytes(3072).hex()[:4096].encode())
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


def touch_input(root: Path, index: int, salt: str) -> None:
    path = root / "in" / f"{index}.txt"
    data = path.read_bytes()
    path.write_bytes(salt.encode() + data[len(salt):])
    os.utime(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    generate(args.dir, args.tasks, args.parallel)
    print(f"wrote {args.tasks} tasks to {args.dir}")
