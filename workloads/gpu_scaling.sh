#!/usr/bin/env bash
# One device call: `bench:gemm` cold on every GPU of the host, then on one GPU (`--gpus 0`), same
# machine, same code. The kernel builds (CPU) run once beforehand and both timed runs start from a copy
# of that cache, so the timed part is the GPU work (autotune, the tuned build, 14 benches, the report).
# Prints the wall times, the GPU each bench ran on and the speed-up against the ideal one.
#
#   bash workloads/gpu_scaling.sh            (ORDER="all one" by default; "one all" to reverse)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_scaling}
ORDER=${ORDER:-all one}
LIMIT=${LIMIT:-260}          # seconds per timed run
mkdir -p "$OUT"
PY=${PY:-python3}
source workloads/device_setup.sh   # nxrun and the carried wheels installed, `python` on PATH
nvidia-smi --query-gpu=index,name,uuid,power.limit,clocks.sm,temperature.gpu --format=csv,noheader | tee "$OUT/device.txt"
count=$(nvidia-smi -L | wc -l)
all=$(seq -s, 0 $((count - 1)))

export NXRUN_CACHE_DIR=/tmp/scaling-builds
rm -rf build results "$NXRUN_CACHE_DIR"
$PY -m nxrun run -q 'gemm:build' > "$OUT/builds.log" 2>&1 || { tail -n 20 "$OUT/builds.log"; exit 1; }
for which in $ORDER; do
    gpus=$([ "$which" = all ] && echo "$all" || echo 0)
    rm -rf build results "/tmp/scaling-$which" && cp -a /tmp/scaling-builds "/tmp/scaling-$which"
    export NXRUN_CACHE_DIR=/tmp/scaling-$which
    $PY -m nxrun run -q 'gemm:build' > /dev/null 2>&1       # restore the builds into the workspace
    start=$(date +%s%N)
    timeout --signal=INT "$LIMIT" $PY -m nxrun run bench:gemm --gpus "$gpus" --json > "$OUT/run-$which.json" 2> "$OUT/run-$which.log"
    rc=$?
    wall=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "$which $gpus $rc $wall" >> "$OUT/walls.txt"
    cp -r results "$OUT/results-$which" 2>/dev/null
done
$PY - "$OUT" <<'PY'
import json, sys, pathlib, glob
out = pathlib.Path(sys.argv[1])
walls = {w: (g, int(rc), int(ms) / 1000) for w, g, rc, ms in (l.split() for l in (out / "walls.txt").read_text().splitlines())}
rows = []
for which, (gpus, rc, wall) in walls.items():
    try:
        data = json.loads((out / f"run-{which}.json").read_text())
    except Exception as exc:
        print(which, "no json:", exc); continue
    tasks = data["tasks"]
    held = sorted({",".join(t.get("gpus") or []) for t in tasks if t.get("gpus")})
    misses = sum(1 for t in tasks if t.get("status") == "miss")
    rows.append((which, gpus, rc, wall, misses, held))
    uuids = sorted({json.loads(p.read_text()).get("gpu", {}).get("uuid", "?") if isinstance(json.loads(p.read_text()).get("gpu"), dict) else "?"
                    for p in (out / f"results-{which}").glob("gemm/*.json")})
    print(f"{which}: results name GPUs {uuids}")
print("| GPUs | pool | rc | cold wall s | misses | GPU sets held |")
print("|---|---|---|---|---|---|")
for which, gpus, rc, wall, misses, held in rows:
    print(f"| {which} | {gpus} | {rc} | {wall:.1f} | {misses} | {' '.join(held)} |")
if "all" in walls and "one" in walls:
    # n x is an upper bound: one bench (01_naive) lasts ~45 s on its own, and the tuned build waits for
    # the timed work of every GPU, so autotune -> build-tuned -> bench-tuned is partly serial
    n = len(walls["all"][0].split(","))
    speed = walls["one"][2] / walls["all"][2]
    cut = " (one GPU was cut at the limit: a lower bound)" if walls["one"][1] != 0 else ""
    print(f"speed-up with {n} GPUs: {speed:.2f}x{cut}; {speed / n:.2f} of {n}x")
PY
