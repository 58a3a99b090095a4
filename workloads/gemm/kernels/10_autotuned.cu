// 10 autotuned tile shapes: the pipelined kernel of 09 with its shape chosen for the device.
//
// `python -m workloads.gemm.autotune` compiles this file for each candidate shape (-DTUNE_BM=... etc.),
// verifies and times each on the GPU, and writes the winner as {"defines": {...}}; the build task of 10
// passes that file to the compiler (--defines-json), so the tuning result is a cached task output and
// a new device re-tunes. Without defines it falls back to 09's shape. Besides the tile shape the
// tuner picks TUNE_KU, how many k steps of the inner loop are unrolled: a fully unrolled 128x256x64
// tile is ~140 KB of machine code and ran at half speed on an H200 (instruction-cache misses
// is the likely cause; no counters were read), KU = 16 at 95% of cuBLAS.

#include "sgemm_pipelined.cuh"

#ifndef TUNE_BM
#define TUNE_BM 128
#endif
#ifndef TUNE_BN
#define TUNE_BN 128
#endif
#ifndef TUNE_BK
#define TUNE_BK 16
#endif
#ifndef TUNE_WM
#define TUNE_WM 32
#endif
#ifndef TUNE_WN
#define TUNE_WN 64
#endif
#ifndef TUNE_STAGES
#define TUNE_STAGES 2
#endif
#ifndef TUNE_KU
#define TUNE_KU 0  // 0: unroll the whole K tile
#endif
#ifndef TUNE_MIN_BLOCKS
#define TUNE_MIN_BLOCKS 1
#endif

using Config = PipelinedSgemm<TUNE_BM, TUNE_BN, TUNE_BK, TUNE_WM, TUNE_WN, TUNE_STAGES,
                              TUNE_KU ? TUNE_KU : TUNE_BK>;

extern "C" __global__ void __launch_bounds__(Config::THREADS, TUNE_MIN_BLOCKS)
sgemm_autotuned(int M, int N, int K, float alpha, const float* __restrict__ A, const float* __restrict__ B,
                float beta, float* __restrict__ C) {
    Config::run(M, N, K, alpha, A, B, beta, C);
}
