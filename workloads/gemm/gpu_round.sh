#!/usr/bin/env bash
# One device call: (optionally) autotune kernel 10, build every kernel, verify and time each against
# cuBLAS, print a short table last. Results, logs and the report go to $OUT.
#   KERNELS="08_warptiling t4_wgmma_tma" SIZES=4096,8192 AUTOTUNE=1 bash workloads/gemm/gpu_round.sh
# SLOW_SIZES applies to 01_naive, whose 8192^3 runs take seconds each.
set -u
OUT=${OUT:-/tmp/gemm_round}
SIZES=${SIZES:-1024,2048,4096,8192,4097x3001x2053}
SLOW_SIZES=${SLOW_SIZES:-1024,2048,4096,4097x3001x2053}
REPEATS=${REPEATS:-20}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/results" "$OUT/report"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
if [ -z "${KERNELS:-}" ]; then
    KERNELS=$(ls workloads/gemm/kernels/*.cu | xargs -n1 basename | sed 's/\.cu$//')
fi
tuned=()
if [ "${AUTOTUNE:-0}" = 1 ]; then
    $PY -m workloads.gemm.autotune --out "$OUT/autotune.json" 2>&1 | tee -a "$OUT/autotune.log"
    tuned=(--defines-json "$OUT/autotune.json")
fi
for stem in $KERNELS; do
    extra=()
    [ "$stem" = 10_autotuned ] && extra=("${tuned[@]}")
    $PY -m workloads.common.build "workloads/gemm/kernels/$stem.cu" --out "build/gemm/$stem" "${extra[@]}" \
        2>&1 | tee -a "$OUT/build.log"
done
for stem in $KERNELS; do
    case $stem in 01_*) sizes=$SLOW_SIZES ;; *) sizes=$SIZES ;; esac
    timeout 300 $PY -m workloads.gemm.bench --kernel "$stem" --cubin-dir "build/gemm/$stem" \
        --out "$OUT/results/$stem.json" --sizes "$sizes" --repeats "$REPEATS" 2>&1 | tee -a "$OUT/bench.log"
done
$PY -m workloads.gemm.report --results "$OUT/results" --out "$OUT/report" > /dev/null
cat "$OUT/report/gemm.md"
