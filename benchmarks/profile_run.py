"""Profile one nxrun invocation in-process: cProfile, the file-system calls it makes by caller,
and the inclusive time and call count of chosen functions.

Runs `nxrun ARGS` (through nxrun.launch, as the console script does) in a workspace, with every
os.stat, os.lstat, os.scandir, os.listdir, os.open/open and os.unlink counted against the first
nxrun function up the stack (os.path and pathlib helpers call these too and are counted for their
caller). Prints the wall time, the counts, and the top functions of the profile. cProfile's cost
per call inflates tight loops several times over; `--timers` instead wraps only the functions of
--time (default: the hot path's candidates) with a clock, about a microsecond a call, and no
profiler, so its seconds are close to a plain run's.

    python benchmarks/synthetic.py /tmp/ws --tasks 2000 --layout packages
    (cd /tmp/ws && nxrun run -q tree:all && nxrun run -q tree:all)        # populate, settle
    python benchmarks/profile_run.py /tmp/ws run -q tree:all [--top 30] [--out run.prof]
    python benchmarks/profile_run.py /tmp/ws --timers run -q tree:all
"""

from __future__ import annotations

import argparse
import builtins
import cProfile
import io
import os
import pstats
import sys
import time
from collections import Counter
from pathlib import Path

_WRAPPED = ("stat", "lstat", "scandir", "listdir", "open", "unlink", "rename", "replace", "link", "mkdir")
_HELPERS = ("genericpath.py", "posixpath.py", "pathlib.py", "os.py", "shutil.py", "profile_run.py")


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.endswith(_HELPERS):
        frame = frame.f_back
    if frame is None:
        return "?"
    name = frame.f_code.co_filename
    short = name[name.rfind("nxrun/"):] if "nxrun/" in name else os.path.basename(name)
    return f"{short}:{frame.f_code.co_name}"


def count_calls() -> Counter:
    counts: Counter = Counter()

    def wrap(module, name: str, label: str):
        real = getattr(module, name)

        def counted(*args, **kwargs):
            counts[(label, _caller())] += 1
            return real(*args, **kwargs)
        setattr(module, name, counted)

    for name in _WRAPPED:
        wrap(os, name, f"os.{name}")
    wrap(builtins, "open", "open")
    return counts


DEFAULT_TIMED = [
    "nxrun.snapshot:load_graph", "nxrun.snapshot:_still_valid", "nxrun.snapshot:_decode",
    "nxrun.graph:new_file_index", "nxrun.run.scheduler:Runner.__init__", "nxrun.store.local:LocalStore.load_stat_cache",
    "nxrun.store.local:LocalStore.prefetch_hits", "nxrun.store.local:LocalStore.get_hit",
    "nxrun.hashing:TaskHasher.components", "nxrun.hashing:FileIndex.expand", "nxrun.hashing:FileIndex.files_under",
    "nxrun.hashing:FileIndex._walk", "nxrun.hashing:FileIndex.is_output", "nxrun.hashing:compile_glob",
    "nxrun.hashing:StatCache.digest", "nxrun.hashing:etag_of", "nxrun.run.scheduler:Runner._hit",
    "nxrun.store.restore:restore_entry", "nxrun.store.safety:check_entry", "nxrun.store.restore:_restore_record",
    "nxrun.run.scheduler:Runner._finish", "nxrun.store.local:LocalStore.save_stat_cache", "nxrun.run.history:save_run",
    "nxrun.store.local:LocalStore.touch_entries", "nxrun.graph:TaskGraph.with_dependencies",
]


def add_timers(names: list[str]) -> dict[str, list[float]]:
    """Wrap each "module:Class.function" (and every nxrun module's name bound to the same function)
    with clocks; returns name -> [calls, inclusive wall seconds, inclusive CPU seconds]. CPU time
    (of the calling thread) is what to read on a loaded machine."""
    import importlib

    totals: dict[str, list[float]] = {}
    clock, cpu = time.perf_counter, time.thread_time
    for name in names:
        module_name, _, path = name.partition(":")
        *parents, attr = path.split(".")
        try:
            owner = importlib.import_module(module_name)
            for part in parents:
                owner = getattr(owner, part)
            real = getattr(owner, attr)
        except (ImportError, AttributeError):   # the code moved on: time the rest
            print(f"not timed: no {name}", file=sys.stderr)
            continue
        totals[name] = slot = [0, 0.0, 0.0]

        def timed(*args, _real=real, _slot=slot, **kwargs):
            start, start_cpu = clock(), cpu()
            try:
                return _real(*args, **kwargs)
            finally:
                _slot[0] += 1
                _slot[1] += clock() - start
                _slot[2] += cpu() - start_cpu
        setattr(owner, attr, timed)
        if not parents:   # bound by name elsewhere (from .x import f): rebind there too
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("nxrun") and getattr(module, attr, None) is real:
                    setattr(module, attr, timed)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="cumulative", help="pstats sort key (cumulative, tottime, ...)")
    parser.add_argument("--out", type=Path, default=None, help="also save the profile here (pstats format)")
    parser.add_argument("--no-count", action="store_true", help="profile only (the counting wrappers cost time)")
    parser.add_argument("--timers", action="store_true", help="time the --time functions instead of cProfile")
    parser.add_argument("--time", default=",".join(DEFAULT_TIMED), metavar="MODULE:FUNCTION,...",
                        help="comma-separated functions for --timers")
    args, nxrun_args = parser.parse_known_args()
    os.chdir(args.workspace)
    counts = None if args.no_count else count_calls()
    from nxrun import launch, run_command, snapshot  # noqa: F401  (imported for the timers)

    run_command.EXIT_AT_ONCE = False      # a replayed no-op would end this process before the report

    timers = add_timers(args.time.split(",")) if args.timers else None
    sys.argv = ["nxrun", *nxrun_args]
    profiler = cProfile.Profile()
    start, start_cpu = time.perf_counter(), time.process_time()
    if timers is None:
        profiler.enable()
    try:
        launch.main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    profiler.disable()
    wall, cpu_total = time.perf_counter() - start, time.process_time() - start_cpu
    out = sys.stderr
    how = "with timers" if timers is not None else "under cProfile"
    print(f"\nnxrun {' '.join(nxrun_args)}: exit {code}, {wall:.3f} s wall, {cpu_total:.3f} s CPU {how}", file=out)
    if counts is not None:
        by_call = Counter()
        for (call, _), n in counts.items():
            by_call[call] += n
        print("file-system calls: " + ", ".join(f"{call} {n}" for call, n in by_call.most_common()), file=out)
        for (call, caller), n in counts.most_common(20):
            print(f"  {n:9d}  {call:12s} {caller}", file=out)
    if timers is not None:
        print(f"{'calls':>9}  {'wall s':>8}  {'CPU s':>8}  function (inclusive)", file=out)
        for name, (calls, seconds, cpu_seconds) in timers.items():
            if calls:
                print(f"{calls:9d}  {seconds:8.3f}  {cpu_seconds:8.3f}  {name}", file=out)
        return
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats(args.sort).print_stats(args.top)
    print(text.getvalue(), file=out)
    if args.out:
        stats.dump_stats(args.out)


if __name__ == "__main__":
    main()
