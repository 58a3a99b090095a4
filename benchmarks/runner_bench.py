"""Runner overhead on synthetic binary-tree workspaces (benchmarks/synthetic.py).

For each N: cold run, fully cached no-op, one leaf input changed, root input changed, outputs
deleted and restored from cache; plus `nxrun --version` start-up, 10,000-file restore and 1 GiB
input hashing. Prints median wall seconds of --repeat runs as a table, and a few figures of the
machine itself (a Python loop, creating a small file, starting a shell pipeline) taken before and
after, since a shared machine's speed can drift during a run.

    python benchmarks/runner_bench.py --sizes 10 100 500 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import generate, touch_input  # noqa: E402

# as a user runs it: the console script of this interpreter's environment (python -m nxrun when
# there is none; it also imports runpy, about 5 ms)
_SCRIPT = Path(sys.executable).with_name("nxrun")
NXRUN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "nxrun"]


# as a user's machine runs it: bytecode caches written and used (some sandboxes disable them,
# which adds the compilation of every module to every invocation)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"NO_COLOR": "1"}


def measured(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command; the CPU time (user + system, of the command and
    every process it waited for) moves much less than wall time on a loaded, shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{result.stderr}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(args: list[str], cwd: Path) -> float:
    return measured(args, cwd)[0]


def bench_tree(tasks: int, repeat: int, parallel: int, base: Path) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in ("cold", "no-op", "leaf changed", "root changed",
                                                      "restore", "restore (hardlink)")}
    run = [*NXRUN, "run", "-q", "tree:all"]
    for r in range(repeat):
        root = base / f"tree-{tasks}-{r}"
        generate(root, tasks, parallel)
        samples["cold"].append(timed(run, root))
        timed(run, root)  # settle the stat cache (files written in the racy window are re-hashed once)
        # the quick cases are taken three times per workspace: one sample is at the mercy of a
        # shared machine's hiccups, and they cost little
        for _ in range(3):
            samples["no-op"].append(timed(run, root))
        for k in range(3):
            touch_input(root, tasks - 1, f"leaf{r}-{k}")
            samples["leaf changed"].append(timed(run, root))
        touch_input(root, 0, f"root{r}")
        samples["root changed"].append(timed(run, root))
        for _ in range(3):
            shutil.rmtree(root / "out")
            samples["restore"].append(timed(run, root))
        # the same with `restore = "hardlink"`: no file is created, only links to the blobs
        config = root / "nxrun.toml"
        config.write_text(config.read_text().replace("[workspace]\n", '[workspace]\nrestore = "hardlink"\n', 1))
        timed(run, root)   # the changed config rebuilds the graph snapshot once
        for _ in range(3):
            shutil.rmtree(root / "out")
            samples["restore (hardlink)"].append(timed(run, root))
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
    speeds, again = [], []
    for _ in range(3):   # a freshly written file each time, hashed once by a new stat cache
        with open(path, "wb") as handle:
            chunk = os.urandom(16 << 20)
            for _ in range(size // len(chunk)):
                handle.write(chunk)
        os.utime(path, (time.time() - 10, time.time() - 10))
        os.sync()  # measure hashing, not the write-back of the file just written
        cache = StatCache()
        start = time.perf_counter()
        cache.digest(str(path))
        speeds.append(size / (time.perf_counter() - start) / 1e9)
        start = time.perf_counter()
        cache.digest(str(path))
        again.append(time.perf_counter() - start)
        path.unlink()
    return {"hash 1 GiB, first read after writing it (GB/s, median of 3)": statistics.median(speeds),
            "re-hash unchanged 1 GiB (s)": statistics.median(again)}


def machine_reference(base: Path) -> dict[str, float]:
    """What this machine does outside nxrun, to read the figures by: a fixed pure-Python loop,
    creating small files in the benchmark folder, and starting a bare shell command."""
    start = time.perf_counter()
    sum(range(10_000_000))
    loop = time.perf_counter() - start
    folder = base / "reference"
    folder.mkdir()
    start = time.perf_counter()
    for i in range(200):
        (folder / f"f{i}").write_bytes(b"x" * 64)
    create = (time.perf_counter() - start) / 200
    shutil.rmtree(folder)
    start = time.perf_counter()
    for _ in range(50):
        subprocess.run("true | cat > /dev/null", shell=True, check=True)
    spawn = (time.perf_counter() - start) / 50
    return {"python loop (s)": loop, "create a small file (ms)": create * 1e3, "bare shell pipeline (ms)": spawn * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500, 2000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--skip-extras", action="store_true", help="only the tree workloads")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the workspaces are made (default: the system temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nxrun-bench-", dir=args.dir) as tmp:
        base = Path(tmp)
        reference = machine_reference(base)
        startup = statistics.median(timed([*NXRUN, "--version"], base) for _ in range(max(5, args.repeat)))
        rows = {n: bench_tree(n, args.repeat, args.parallel, base) for n in args.sizes}
        extras = {} if args.skip_extras else {**bench_many_files(base), **bench_hashing(base)}
        reference_after = machine_reference(base)
    columns = ["cold", "no-op", "leaf changed", "root changed", "restore", "restore (hardlink)"]
    print(f"nxrun runner benchmark: median of {args.repeat} workspaces (no-op, leaf changed and restore: "
          f"3 runs each), --parallel {args.parallel}, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print("| N | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for n, row in rows.items():
        print(f"| {n} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    print(f"\n`{' '.join(Path(a).name for a in NXRUN)} --version`: {startup:.3f} s")
    for key, value in extras.items():
        print(f"{key}: {value:.3f}")
    print("\nmachine, before / after: " + "; ".join(
        f"{key} {reference[key]:.3f} / {reference_after[key]:.3f}" for key in reference))


if __name__ == "__main__":
    main()
