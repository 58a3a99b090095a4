"""Runner cost by workspace shape at monorepo scale, side by side with doit.

Three shapes of the binary-tree workload of benchmarks/synthetic.py, for each N of --sizes:
  A  one file, explicit inputs: every task in the root nxrun.toml;
  B  one folder per task, default inputs: `projects = ["packages/*"]`, a project file each;
  C  doit 0.37 on the one-file workload (installed into a venv of its own, see --doit-venv);
and, once per round, one task whose output is a deep tree (6,000 files in 2,000 nested folders),
against `cp -r` of the same tree.

Scenarios: cold (new cache), no-op (everything cached), leaf changed (one leaf input edited),
restore (outputs deleted, restored from the cache; doit has no cache and runs everything again),
and for shape B `run-many -t build` as a no-op. Cases are interleaved: every sample of a scenario
is taken for A, B, C in turn, then again (A B C A B C ...), so a shared machine's drift falls on
all of them alike. Figures are medians of wall seconds; a second table gives CPU seconds (user +
system of the command and its children), which a loaded machine disturbs much less.

    python benchmarks/monorepo_bench.py --sizes 500 2000                          # a few minutes
    python benchmarks/monorepo_bench.py --sizes 500 1000 2000 10000 --repeat 3    # the full table

At N = 10,000 a run can take minutes per sample on a slow build: narrow it with --scenarios,
--layouts, --quick and --repeat. The growth exponent is fitted (log-log least squares) to the medians
of every N from 1000 to 10,000 (or of every N measured); the targets of issue 11 are printed last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner_bench import NXRUN, machine_reference, measured  # noqa: E402
from synthetic import generate, generate_deep, generate_dodo, generate_packages, touch_input  # noqa: E402

DOIT_VERSION = "0.37.0"
SCENARIOS = ("cold", "no-op", "leaf changed", "restore", "run-many no-op")
ONE_FILE, PACKAGES, DOIT = "one file, explicit inputs", "one folder per task, default inputs", "doit"
LAYOUTS = {"onefile": ONE_FILE, "packages": PACKAGES, "doit": DOIT}
DEEP_AUTO, DEEP_LINK, CP = 'nxrun, restore = "auto"', 'nxrun, restore = "hardlink"', "cp -r"


@dataclass
class Case:
    """One workspace and how to drive it."""

    label: str
    root: Path
    command: list[str]
    clear_outputs: Callable[[], None]
    clear_cache: Callable[[], None]   # also clears the outputs: a cold run writes everything
    layout: str = "onefile"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _fresh_folder(path: Path) -> None:
    _remove(path)
    path.mkdir()


def doit_command(venv: Path) -> list[str] | None:
    """doit in its own venv (made and filled on first use), or None when it cannot be installed."""
    doit = venv / "bin" / "doit"
    if not doit.exists():
        print(f"installing doit {DOIT_VERSION} into {venv} ...", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"doit=={DOIT_VERSION}"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"doit could not be installed ({exc}); its column stays empty", file=sys.stderr)
            return None
    return [str(doit)]


def tree_cases(base: Path, tasks: int, parallel: int, doit: list[str] | None, layouts: list[str]) -> list[Case]:
    run = [*NXRUN, "run", "-q", "tree:all"]
    one = base / f"onefile-{tasks}"
    packages = base / f"packages-{tasks}"

    def package_dists() -> list[Path]:
        return [packages / "packages" / f"p{i}" / "dist" for i in range(tasks)]

    def clear_package_outputs() -> None:
        for dist in package_dists():
            _remove(dist)

    def clear_package_cache() -> None:
        _remove(packages / ".nxrun")
        for dist in package_dists():
            _fresh_folder(dist)

    cases = []
    if "onefile" in layouts:
        generate(one, tasks, parallel)
        cases.append(Case(ONE_FILE, one, run, lambda: _remove(one / "out"),
                          lambda: (_remove(one / ".nxrun"), _fresh_folder(one / "out"))))
    if "packages" in layouts:
        generate_packages(packages, tasks, parallel)
        cases.append(Case(PACKAGES, packages, run, clear_package_outputs, clear_package_cache, "packages"))
    if doit and "doit" in layouts:
        plain = base / f"doit-{tasks}"
        generate_dodo(plain, tasks)

        def clear_doit_cache() -> None:
            for path in plain.glob(".doit.db*"):
                path.unlink()
            _fresh_folder(plain / "out")

        # doit creates no folders: its restore is a re-run into an empty out/
        cases.append(Case(DOIT, plain, [*doit, "-n", str(parallel), "-P", "thread"],
                          lambda: _fresh_folder(plain / "out"), clear_doit_cache))
    return cases


Samples = dict[tuple, list[tuple[float, float]]]


def bench_trees(cases: list[Case], tasks: int, rounds: int, quick: int, scenarios: list[str],
                samples: Samples) -> None:
    def take(scenario: str, case: Case, command: list[str] | None = None) -> None:
        samples.setdefault((tasks, scenario, case.label), []).append(measured(command or case.command, case.root))

    for r in range(rounds):
        for case in cases:
            if r == 0 or "cold" in scenarios:   # the first round's first run is a cold run anyway
                if r:
                    case.clear_cache()
                if "cold" in scenarios:
                    take("cold", case)
                else:
                    measured(case.command, case.root)
            measured(case.command, case.root)   # settle: files written in the racy window are re-hashed once
        if "no-op" in scenarios:
            for _ in range(quick):
                for case in cases:
                    take("no-op", case)
        if "run-many no-op" in scenarios:
            for _ in range(quick):
                for case in cases:
                    if case.layout == "packages":
                        take("run-many no-op", case, [*NXRUN, "run-many", "-q", "-t", "build"])
        if "leaf changed" in scenarios:
            for k in range(quick):
                for case in cases:
                    touch_input(case.root, tasks - 1, f"leaf{r}-{k}", case.layout)
                    take("leaf changed", case)
        if "restore" in scenarios:
            for _ in range(quick):
                for case in cases:
                    case.clear_outputs()
                    take("restore", case)


def bench_deep(base: Path, files: int, folders: int, rounds: int, quick: int, parallel: int,
               scenarios: list[str], samples: Samples) -> None:
    run = [*NXRUN, "run", "-q", "deep:gen"]
    auto, link = base / "deep-auto", base / "deep-hardlink"
    generate_deep(auto, files, folders, "auto", parallel)
    generate_deep(link, files, folders, "hardlink", parallel)
    pristine, copy = base / "deep-pristine", base / "deep-copy"
    key = ("deep", files, folders)

    def take(scenario: str, label: str, command: list[str], cwd: Path) -> None:
        samples.setdefault((*key, scenario, label), []).append(measured(command, cwd))

    for r in range(rounds):
        if r == 0 or "cold" in scenarios:
            for root, label in ((auto, DEEP_AUTO), (link, DEEP_LINK)):
                _remove(root / ".nxrun")
                _remove(root / "out")
                if "cold" in scenarios:
                    take("cold", label, run, root)
                else:
                    measured(run, root)
                measured(run, root)   # settle
        if r == 0:
            shutil.copytree(auto / "out", pristine, symlinks=True)
        if "no-op" in scenarios:
            for _ in range(quick):
                take("no-op", DEEP_AUTO, run, auto)
                take("no-op", DEEP_LINK, run, link)
        if "leaf changed" in scenarios:
            # the deep shape's "leaf": one file of the cached output tree edited; the hit puts it back
            edited = auto / "out" / "f0.txt"
            for k in range(quick):
                edited.write_text(f"edited {r}-{k}\n")
                take("one output file edited", DEEP_AUTO, run, auto)
        if "restore" in scenarios:
            for _ in range(quick):
                _remove(auto / "out")
                take("restore", DEEP_AUTO, run, auto)
                _remove(link / "out")
                take("restore", DEEP_LINK, run, link)
                _remove(copy)
                take("restore", CP, ["cp", "-r", str(pristine), str(copy)], base)


def _median(values: list[tuple[float, float]] | None, which: int) -> float | None:
    return statistics.median(v[which] for v in values) if values else None


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}"


def tree_table(samples: Samples, sizes: list[int], scenarios: list[str], which: int) -> list[str]:
    lines = [f"| N | scenario | {ONE_FILE} | {PACKAGES} | {DOIT} | B / A | A / doit | B / doit |",
             "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        for scenario in scenarios:
            a, b, c = (_median(samples.get((n, scenario, label)), which) for label in (ONE_FILE, PACKAGES, DOIT))
            if a is None and b is None and c is None:
                continue
            name = "restore (doit: re-runs all)" if scenario == "restore" and c is not None else scenario
            lines.append(f"| {n} | {name} | {_cell(a)} | {_cell(b)} | {_cell(c)} | {_ratio(b, a)} | "
                         f"{_ratio(a, c)} | {_ratio(b, c)} |")
    return lines


def deep_table(samples: Samples, files: int, folders: int, which: int) -> list[str]:
    key = ("deep", files, folders)
    lines = [f"| one task, {files} output files in {folders} folders | {DEEP_AUTO} | {DEEP_LINK} | {CP} | "
             "auto / cp -r | hardlink / cp -r |", "|---|---|---|---|---|---|"]
    for scenario in ("cold", "no-op", "one output file edited", "restore"):
        a, b, c = (_median(samples.get((*key, scenario, label)), which) for label in (DEEP_AUTO, DEEP_LINK, CP))
        if a is None and b is None:
            continue
        lines.append(f"| {scenario} | {_cell(a)} | {_cell(b)} | {_cell(c)} | {_ratio(a, c)} | {_ratio(b, c)} |")
    return lines


def _fitted_exponent(points: list[tuple[int, float]]) -> float:
    """The least-squares slope of log(time) against log(N): 1.0 is linear."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)


def growth(samples: Samples, sizes: list[int]) -> list[str]:
    """The exponent fitted (log-log least squares) to the medians of every N from 1000 to 10,000
    (else to every N measured), and the no-op's cost per task at the largest N."""
    low = 1000 if 1000 in sizes else min(sizes)
    high = 10_000 if 10_000 in sizes else max(sizes)
    fitted = [n for n in sizes if low <= n <= high]
    if low == high:
        return ["(one size only: no growth exponent)"]
    lines = [f"growth, N = {', '.join(map(str, fitted))}: the exponent fitted to the medians (log-log least "
             "squares; 1.0 is linear), of CPU time (steadier on a shared machine) and of wall time, and the "
             f"no-op's cost per task at N = {high}:"]
    for label in (ONE_FILE, PACKAGES, DOIT):
        parts = []
        for scenario in ("no-op", "leaf changed"):
            cpu = [(n, _median(samples.get((n, scenario, label)), 1)) for n in fitted]
            wall = [(n, _median(samples.get((n, scenario, label)), 0)) for n in fitted]
            if all(t for _, t in cpu) and all(t for _, t in wall):
                parts.append(f"{scenario} exponent {_fitted_exponent(cpu):.2f} CPU ({_fitted_exponent(wall):.2f} "
                             "wall)")
                if scenario == "no-op":
                    parts.append(f"no-op {1e3 * cpu[-1][1] / high:.3f} ms CPU per task ({1e3 * wall[-1][1] / high:.3f} "
                                 "wall), start-up included")
        if parts:
            lines.append(f"  {label}: " + "; ".join(parts))
    return lines


def targets(samples: Samples, sizes: list[int]) -> list[str]:
    """The issue's targets against this run's CPU medians (wall in brackets)."""
    def cell(n: int, scenario: str, label: str) -> tuple[float | None, float | None]:
        values = samples.get((n, scenario, label))
        return _median(values, 1), _median(values, 0)

    lines = ["targets (CPU medians; wall in brackets):"]
    if 2000 in sizes:
        doit_cpu, doit_wall = cell(2000, "no-op", DOIT)
        for label in (ONE_FILE, PACKAGES):
            cpu, wall = cell(2000, "no-op", label)
            if cpu and doit_cpu:
                lines.append(f"  no-op at N = 2000, {label}: {_ratio(cpu, doit_cpu)} x doit "
                             f"[{_ratio(wall, doit_wall)}] (target <= 0.5)")
    if 1000 in sizes:
        (a, a_wall), (b, b_wall) = cell(1000, "no-op", ONE_FILE), cell(1000, "no-op", PACKAGES)
        if a and b:
            lines.append(f"  layouts at N = 1000, no-op, package / one file: {_ratio(b, a)} [{_ratio(b_wall, a_wall)}] "
                         "(target <= 1.3)")
    if 10_000 in sizes:
        for label in (ONE_FILE, PACKAGES):
            cpu, wall = cell(10_000, "no-op", label)
            if cpu:
                lines.append(f"  no-op at N = 10,000, {label}: {_cell(cpu)} s [{_cell(wall)}] (target < 1.5), "
                             f"{1e3 * cpu / 10_000:.3f} ms per task [{1e3 * wall / 10_000:.3f}] (target < 0.3)")
    return lines if len(lines) > 1 else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds: cold is sampled once a round, the quick scenarios --quick times")
    parser.add_argument("--quick", type=int, default=3,
                        help="samples a round of no-op, leaf changed and restore (cheap, and one sample is at a "
                             "shared machine's mercy)")
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--deep-files", type=int, default=6000)
    parser.add_argument("--deep-folders", type=int, default=2000)
    parser.add_argument("--skip-deep", action="store_true", help="no deep-output-tree task")
    parser.add_argument("--skip-doit", action="store_true", help="no doit column")
    parser.add_argument("--doit-venv", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nxrun-bench"
                        / f"doit-{DOIT_VERSION}", help="venv doit is installed into (made on first use)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the workspaces are made (default: the system temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write every sample here")
    args = parser.parse_args()
    doit = None if args.skip_doit else doit_command(args.doit_venv)
    samples: Samples = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="nxrun-monorepo-", dir=args.dir) as tmp:
        base = Path(tmp)
        reference = machine_reference(base)
        for n in args.sizes:
            folder = base / f"n{n}"
            folder.mkdir()
            bench_trees(tree_cases(folder, n, args.parallel, doit, args.layouts), n, args.repeat, args.quick,
                        args.scenarios, samples)
            shutil.rmtree(folder)
        if not args.skip_deep:
            folder = base / "deep"
            folder.mkdir()
            bench_deep(folder, args.deep_files, args.deep_folders, args.repeat, args.quick, args.parallel,
                       args.scenarios, samples)
            shutil.rmtree(folder)
        reference_after = machine_reference(base)
    load_after = os.getloadavg()

    print(f"nxrun monorepo benchmark: medians of {args.repeat} rounds, cases interleaved (no-op, leaf "
          f"changed, restore: {args.quick} samples a round), --parallel {args.parallel} (doit: -n {args.parallel} "
          f"-P thread, doit {DOIT_VERSION if doit else 'not installed'}), {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}")
    print("\nwall seconds:")
    print("\n".join(tree_table(samples, args.sizes, args.scenarios, 0)))
    print("\nCPU seconds (user + system, the command and its children):")
    print("\n".join(tree_table(samples, args.sizes, args.scenarios, 1)))
    print()
    print("\n".join(growth(samples, args.sizes)))
    print("\n".join(targets(samples, args.sizes)))
    if not args.skip_deep:
        print("\nwall seconds:")
        print("\n".join(deep_table(samples, args.deep_files, args.deep_folders, 0)))
        print("\nCPU seconds:")
        print("\n".join(deep_table(samples, args.deep_files, args.deep_folders, 1)))
    print("\nmachine, before / after: " + "; ".join(
        f"{key} {reference[key]:.3f} / {reference_after[key]:.3f}" for key in reference)
        + f"; load average (1 min) {load_before[0]:.1f} / {load_after[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({
            "sizes": args.sizes, "repeat": args.repeat, "quick": args.quick, "parallel": args.parallel,
            "samples": [{"key": list(key), "wall": [w for w, _ in values], "cpu": [c for _, c in values]}
                        for key, values in samples.items()],
            "machine": {"before": reference, "after": reference_after, "load": [load_before, load_after]},
        }, indent=1))


if __name__ == "__main__":
    main()
