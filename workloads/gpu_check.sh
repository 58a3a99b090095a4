#!/usr/bin/env bash
# One device call, one whole round: install nxrun without the network (wheels carried in .whl/),
# run the pipelines through nxrun itself (cold, then again to show every task restored), then the
# gpu-marked tests, and print the result tables last. Full logs and results go to $OUT (results.tgz is
# written before the tests run, so a round cut short still returns its measurements).
#
#   bash workloads/gpu_check.sh                 # bench:paged + bench:gemm + tests
#   PIPELINES="bench:paged" TESTS=0 bash workloads/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
PIPELINES=${PIPELINES:-bench:paged bench:gemm}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}
PIPELINE_SECONDS=${PIPELINE_SECONDS:-520}   # all pipelines together; a device call is cut at 600 s
mkdir -p "$OUT"
PY=${PY:-python3}
source workloads/device_setup.sh   # nxrun and the carried wheels installed, `python` on PATH

{
    nvidia-smi --query-gpu=name,uuid,driver_version,power.limit,clocks.applications.graphics,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
    echo "probe gpu-state: $($PY -m workloads.common.probes gpu-state)"
    echo "probe gpu-libs: $($PY -m workloads.common.probes gpu-libs | tr '\n' ' ')"
} | tee "$OUT/device.txt"
status=0
deadline=$(( $(date +%s) + PIPELINE_SECONDS ))
for pipeline in $PIPELINES; do
    start=$(date +%s%N)
    timeout --signal=INT $(( deadline - $(date +%s) )) $PY -m nxrun run "$pipeline" > "$OUT/${pipeline/:/-}.log" 2>&1 || status=1
    cold=$(( ($(date +%s%N) - start) / 1000000 ))ms
    start=$(date +%s%N)
    again=$($PY -m nxrun run -q "$pipeline" 2>&1 | tail -n 1)
    warm=$(( ($(date +%s%N) - start) / 1000000 ))ms
    echo "$pipeline: $(grep '^nxrun:' "$OUT/${pipeline/:/-}.log" | tail -n 1)  [cold, wall ${cold}]"
    echo "$pipeline again: $again  [wall ${warm}]"
done
tar czf "$OUT/results.tgz" results build/*/*.json build/*/*/*.json 2>/dev/null
$PY -m nxrun history -n 5 > "$OUT/history.txt" 2>&1
$PY -m nxrun report --out "$OUT/report" > /dev/null 2>&1 && tar czf "$OUT/report.tgz" -C "$OUT" report && rm -rf "$OUT/report"
if [ "${TESTS:-1}" = 1 ]; then
    timeout "$TEST_TIMEOUT" $PY -m pytest -m gpu -q -p no:cacheprovider tests > "$OUT/gpu-tests.log" 2>&1 || status=1
    echo "gpu tests: $(tail -n 1 "$OUT/gpu-tests.log")"
    grep -E "^(FAILED|ERROR)" "$OUT/gpu-tests.log" | head -n 20
fi
echo
grep -h -E "paired ratio|best .* vs read" "$OUT"/bench-*.log 2>/dev/null | grep -E "t4_wgmma_tma|10_autotuned|8192|best" | head -n 40
for report in results/paged/report/README.md results/gemm-report/gemm.md; do
    [ -f "$report" ] && { echo "== $report"; sed -n '/^|/p' "$report" | head -n 30; echo; }
done
exit $status
