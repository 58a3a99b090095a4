#!/usr/bin/env bash
# One device call for the serving engine: build the kernels, the gpu-marked serving tests, the offline
# comparison with transformers and (STAGE=full) the bench:serving pipeline through nxrun. Logs to $OUT.
#
#   bash workloads/serving/gpu_round.sh            # STAGE=smoke: tests, two short serve runs, peer
#   STAGE=sweep bash workloads/serving/gpu_round.sh # the engine sweep alone (every GPU of the pool at once)
#   STAGE=full bash workloads/serving/gpu_round.sh # tests, then `nxrun run bench:serving` (sweep + peer + report)
#   STAGE=swap bash workloads/serving/gpu_round.sh # preemption by swap vs recompute, paired per GPU (SWAP_RATES)
# On a machine kept warm between calls the local cache carries over, so `sweep` then `full` splits a sweep
# longer than one call: the second finds the sweep's tasks cached.
set -uo pipefail
OUT=${OUT:-/tmp/serving_round}
STAGE=${STAGE:-smoke}
mkdir -p "$OUT"
PY=${PY:-python3}
source workloads/device_setup.sh   # nxrun and the carried wheels installed, `python` on PATH
nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu \
    --format=csv,noheader | tee "$OUT/device.txt"
start=$(date +%s)
if [ "$STAGE" = sweep ]; then
    timeout ${PIPELINE_TIMEOUT:-540} $PY -m nxrun run serving:engine-paged serving:engine-reservation > "$OUT/sweep.log" 2>&1
    echo "sweep rc=$? $(( $(date +%s) - start ))s: $(grep '^nxrun:' "$OUT/sweep.log" | tail -n 1)"
    grep -h "^serve " "$OUT/sweep.log"; tar czf "$OUT/sweep.tgz" results/serving/engine 2>/dev/null
    nvidia-smi --query-gpu=index,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader
    exit 0
fi
if [ "$STAGE" = swap ]; then
    # preemption by swap against recompute, paired: each GPU serves one rate near the paged knee with
    # both modes, one after the other (the order alternates between GPUs), so each pair shares a GPU
    $PY -m nxrun run -q paged:build "serving:trace[dataset=sharegpt]" > "$OUT/swap-setup.log" 2>&1 \
        || { cat "$OUT/swap-setup.log"; exit 1; }
    rates=(${SWAP_RATES:-8 9 10 11})
    for i in "${!rates[@]}"; do
        modes="recompute swap"; [ $((i % 2)) = 1 ] && modes="swap recompute"
        (for mode in $modes; do
            CUDA_VISIBLE_DEVICES=$i timeout 200 $PY -m workloads.serving.serve results/serving/traces/sharegpt.jsonl \
                --engine paged --rate ${rates[$i]} --duration 60 --min-requests 60 --cpu-num 6 --kv-tokens 15360 \
                --max-len 2048 --max-batch 128 --kernels build/paged --preemption $mode \
                --out "$OUT/swap-$mode-${rates[$i]}.json" > "$OUT/swap-$mode-${rates[$i]}.log" 2>&1
        done) &
    done
    wait
    echo "swap stage $(( $(date +%s) - start ))s"
    $PY - "$OUT" <<'PYEOF'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("swap-*.json")):
    d = json.loads(path.read_text()); m = d["metrics"]
    rows.append((float(d["rate"]), d["config"]["preemption"], m["normalized_latency_s_per_token"],
                 m["throughput_req_s"], m["ttft_s"]["p50"], m["slo_attained"], m["preemptions"],
                 (d.get("gpu_before") or {}).get("uuid", "")[-8:]))
print("rate mode norm_lat served_req_s ttft_p50 slo preempt gpu")
for r in sorted(rows):
    print(f"{r[0]:g} {r[1]} {r[2]:.4f} {r[3]:.2f} {r[4]:.3f} {r[5]:.3f} {r[6]} {r[7]}")
PYEOF
    tar czf "$OUT/swap.tgz" -C "$OUT" $(cd "$OUT" && ls swap-*.json swap-*.log)
    exit 0
fi
if [ -z "${SKIP_TESTS:-}" ]; then
    timeout ${TEST_TIMEOUT:-150} $PY -m pytest -m gpu -x -q -p no:cacheprovider tests/serving > "$OUT/gpu-tests.log" 2>&1
    echo "gpu tests: $(tail -n 1 "$OUT/gpu-tests.log") $(( $(date +%s) - start ))s" | tee -a "$OUT/summary.txt"
    grep -E "^(FAILED|ERROR|E )" "$OUT/gpu-tests.log" | head -n 15
fi
if [ "$STAGE" = smoke ]; then
    $PY -m workloads.paged_attention.build --out build/paged > "$OUT/build.log" 2>&1
    $PY -m workloads.serving.traces --dataset sharegpt --rate 200 --num 2000 --seed 0 --out /tmp/sharegpt.jsonl > /dev/null
    for engine in paged reservation; do
        timeout 100 $PY -m workloads.serving.serve /tmp/sharegpt.jsonl --engine $engine --rate ${RATE:-8} --num ${NUM:-60} \
            --max-batch 128 --out "$OUT/serve-$engine.json" 2>&1 | tail -n 3
        echo "serve $engine done $(( $(date +%s) - start ))s"
    done
    timeout ${PEER_TIMEOUT:-260} $PY -m workloads.serving.peer --out "$OUT/peer.json" --rounds 1 2>&1 | tail -n 30
    echo "peer done $(( $(date +%s) - start ))s"
else
    timeout ${PIPELINE_TIMEOUT:-420} $PY -m nxrun run bench:serving > "$OUT/bench-serving.log" 2>&1
    echo "bench:serving rc=$? $(( $(date +%s) - start ))s: $(grep '^nxrun:' "$OUT/bench-serving.log" | tail -n 1)" \
        | tee -a "$OUT/summary.txt"
    # the second run restores: the outputs are deleted first, and what comes back must be byte-identical
    find results/serving build/paged -type f -exec sha256sum {} + | sort -k2 > /tmp/serving-before.sha
    rm -rf results/serving build/paged
    again=$($PY -m nxrun run -q bench:serving 2>&1 | tail -n 1)
    echo "again (outputs deleted first): $again" | tee -a "$OUT/summary.txt"
    find results/serving build/paged -type f -exec sha256sum {} + | sort -k2 > /tmp/serving-after.sha
    { cmp -s /tmp/serving-before.sha /tmp/serving-after.sha \
        && echo "restored outputs: byte-identical ($(wc -l < /tmp/serving-after.sha) files)" \
        || { echo "restored outputs differ:"; diff /tmp/serving-before.sha /tmp/serving-after.sha | head; }; } \
        | tee -a "$OUT/summary.txt"
    tar czf "$OUT/results.tgz" results/serving 2>/dev/null
    # the headline tables first and the run's verdicts last: a reply keeps only the end of a long output
    if [ -f results/serving/report/README.md ]; then
        grep -A 8 "^| criterion" results/serving/report/README.md
        sed -n '/^## Offline/,/^## Decode/p' results/serving/report/README.md | grep "^| ours\|^| transformers\|^| physical\|^Ours"
        sed -n '/^## Decode step/,$p' results/serving/report/README.md | grep "^| [0-9]"
    fi
fi
nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader
[ -f "$OUT/summary.txt" ] && { echo "--- summary"; cat "$OUT/summary.txt"; }
