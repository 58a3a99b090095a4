// 09 double-buffered pipeline: cp.async global -> shared prefetch and shared -> register prefetch.
//
// The pipeline itself lives in sgemm_pipelined.cuh (10 reuses it with tuned shapes). This file fixes
// the shape by hand: 128x128 block tile, K step 16, 8 warps of 32x64, two shared-memory stages (double
// buffering: copy tile k+1 while computing tile k). 8x8 outputs per thread as in 05..08.

#include "sgemm_pipelined.cuh"

using Config = PipelinedSgemm<128, 128, 16, 32, 64, 2>;

extern "C" __global__ void __launch_bounds__(Config::THREADS)
sgemm_double_buffered(int M, int N, int K, float alpha, const float* __restrict__ A, const float* __restrict__ B,
                      float beta, float* __restrict__ C) {
    Config::run(M, N, K, alpha, A, B, beta, C);
}
