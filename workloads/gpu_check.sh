#!/usr/bin/env bash
# One device call, one whole round: install nxrun without the network (wheels carried in .whl/),
# run the gpu-marked tests, run the pipelines through nxrun itself (cold, then again to show every
# task restored), and print the result tables last. Full logs and results go to $OUT.
#
#   bash workloads/gpu_check.sh                 # tests + bench:paged + bench:gemm
#   PIPELINES="bench:paged" TESTS=0 bash workloads/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
PIPELINES=${PIPELINES:-bench:paged bench:gemm}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NO_COLOR=1
PY=${PY:-python3}

if [ -d .whl ]; then  # sqlite-utils and boto3 are not on the GPU image
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . > /tmp/nxrun-install.log 2>&1 || { cat /tmp/nxrun-install.log; exit 1; }
# task commands say `python`; make sure it is the interpreter that has cupy and torch
mkdir -p /tmp/bin && ln -sf "$(command -v $PY)" /tmp/bin/python && export PATH=/tmp/bin:$PATH

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$OUT/device.txt"
status=0
if [ "${TESTS:-1}" = 1 ]; then
    $PY -m pytest -m gpu -q -p no:cacheprovider tests > "$OUT/gpu-tests.log" 2>&1 || status=1
    echo "gpu tests: $(tail -n 1 "$OUT/gpu-tests.log")"
fi
for pipeline in $PIPELINES; do
    start=$(date +%s%N)
    $PY -m nxrun run "$pipeline" > "$OUT/${pipeline/:/-}.log" 2>&1 || status=1
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
echo
for report in results/paged/report/README.md results/gemm-report/gemm.md; do
    [ -f "$report" ] && { echo "== $report"; cat "$report"; echo; }
done
exit $status
