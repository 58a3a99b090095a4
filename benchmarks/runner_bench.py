"""Runner overhead on synthetic binary-tree workspaces (benchmarks/synthetic.py).

For each N: cold run, fully cached no-op, one leaf input changed, root input changed, outputs
deleted and restored from cache; plus `nxrun --version` start-up, 10,000-file restore and 1 GiB
input hashing. Prints median wall seconds of --repeat runs as a table.

    python benchmarks/runner_bench.py --sizes 10 100 500 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import generate, touch_input  # noqa: E402

NXRUN = [sys.executable, "-m", "nxrun"]


# as a user's machine runs it: bytecode caches written and used (some sandboxes disable them,
# which adds the compilation of every module to every invocation)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"NO_COLOR": "1"}


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{result.stderr}")
    return elapsed


def bench_tree(tasks: int, repeat: int, parallel: int, base: Path) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in ("cold", "no-op", "leaf changed", "root changed",
                                                      "restore")}
    run = [*NXRUN, "run", "-q", "tree:all"]
    for r in range(repeat):
        root = base / f"tree-{tasks}-{r}"
        generate(root, tasks, parallel)
        samples["cold"].append(timed(run, root))
        timed(run, root)  # settle the stat cache (files written in the racy window are re-hashed once)
        samples["no-op"].append(timed(run, root))
        touch_input(root, tasks - 1, f"leaf{r}")
        samples["leaf changed"].append(timed(run, root))
        touch_input(root, 0, f"root{r}")
        samples["root changed"].append(timed(run, root))
        shutil.rmtree(root / "out")
        samples["restore"].append(timed(run, root))
        shutil.rmtree(root)
    return {k: statistics.median(v) for k, v in samples.items()}


def bench_many_files(base: Path, files: int = 10_000) -> dict[str, float]:
    root = base / "many"
    root.mkdir()
    (root / "nxrun.toml").write_text(
        "[workspace]\nrestore = \"hardlink\"\n[projects.p.targets.gen]\n"
        f"command = \"mkdir -p out && for i in $(seq 1 {files}); do echo $i > out/f$i.txt; done\"\n"
        "inputs = []\noutputs = [\"out\"]\n")
    run = [*NXRUN, "run", "-q", "p:gen"]
    timed(run, root)
    shutil.rmtree(root / "out")
    restore_hardlink = timed(run, root)
    (root / "nxrun.toml").write_text((root / "nxrun.toml").read_text().replace('"hardlink"', '"copy"'))
    shutil.rmtree(root / "out")
    restore_copy = timed(run, root)
    shutil.rmtree(root)
    return {"restore 10k files (hardlink)": restore_hardlink, "restore 10k files (copy)": restore_copy}


def bench_hashing(base: Path, size: int = 1 << 30) -> dict[str, float]:
    from nxrun.hashing import StatCache

    path = base / "big.bin"
    with open(path, "wb") as handle:
        chunk = os.urandom(16 << 20)
        for _ in range(size // len(chunk)):
            handle.write(chunk)
    os.utime(path, (time.time() - 10, time.time() - 10))
    os.sync()  # measure hashing, not the write-back of the file just written
    cache = StatCache()
    start = time.perf_counter()
    cache.digest(str(path))
    first = time.perf_counter() - start
    start = time.perf_counter()
    cache.digest(str(path))
    second = time.perf_counter() - start
    path.unlink()
    return {"hash 1 GiB (GB/s, page cache)": size / first / 1e9, "re-hash unchanged 1 GiB (s)": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500, 2000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--skip-extras", action="store_true", help="only the tree workloads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nxrun-bench-") as tmp:
        base = Path(tmp)
        startup = statistics.median(timed([*NXRUN, "--version"], base) for _ in range(max(5, args.repeat)))
        script = Path(sys.executable).with_name("nxrun")
        script = str(script) if script.exists() else None
        script_startup = statistics.median(timed([script, "--version"], base) for _ in range(5)) if script else None
        rows = {n: bench_tree(n, args.repeat, args.parallel, base) for n in args.sizes}
        extras = {} if args.skip_extras else {**bench_many_files(base), **bench_hashing(base)}
    columns = ["cold", "no-op", "leaf changed", "root changed", "restore"]
    print(f"nxrun runner benchmark: median of {args.repeat}, --parallel {args.parallel}, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print("| N | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for n, row in rows.items():
        print(f"| {n} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    print(f"\n`python -m nxrun --version`: {startup:.3f} s"
          + (f"; `nxrun --version` (console script): {script_startup:.3f} s" if script_startup else ""))
    for key, value in extras.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
