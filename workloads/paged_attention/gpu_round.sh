#!/usr/bin/env bash
# One device call: (re)build if the carried cubins are missing, verify, bench, sanitizer, short table last.
# Usage on the GPU machine, from the repository root: bash workloads/paged_attention/gpu_round.sh [bench args]
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/paged_out}
mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv,noheader
[ -f build/paged/4_decode_v2_splitk.cubin ] || $PY -m workloads.paged_attention.build --out build/paged -j 8 2>&1 | tee "$OUT/build.log"
$PY -m workloads.paged_attention.verify --kernels build/paged --out "$OUT/verify.json" 2>&1 | tee "$OUT/verify.log"
if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 $PY -m workloads.paged_attention.verify --level small \
    --kernels build/paged --out /tmp/paged_memcheck.json > "$OUT/memcheck.log" 2>&1
  echo "memcheck exit $? (log: memcheck.log, last lines:)"; tail -3 "$OUT/memcheck.log"
fi
$PY -m workloads.paged_attention.bench --kernels build/paged --out "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
for variant in ${VARIANTS:-}; do  # extra build folders (e.g. build/paged_u4), bench args VARIANT_ARGS
  $PY -m workloads.paged_attention.bench --kernels "$variant" --out "$OUT/bench_$(basename $variant).json" \
    ${VARIANT_ARGS:-} 2>&1 \
    | tee "$OUT/bench_$(basename $variant).log"
done
