// 03 shared-memory block tiling: each block stages 32x32 tiles of A and B in shared memory.
//
// Every element loaded from global memory is now used 32 times (once per thread of the row or column
// of the tile) instead of once, cutting global traffic 32-fold. Out-of-range elements of ragged edge
// tiles are stored as zeros so the inner loop needs no bounds checks: zeros add nothing to the sum.
// The limit now is shared memory: two LDS per FMA.

#define TILE 32

extern "C" __global__ void sgemm_smem_tiling(int M, int N, int K, float alpha, const float* __restrict__ A,
                                             const float* __restrict__ B, float beta, float* __restrict__ C) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    const int ty = threadIdx.x / TILE, tx = threadIdx.x % TILE;
    const int row = blockIdx.y * TILE + ty;
    const int col = blockIdx.x * TILE + tx;
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        // tx walks the contiguous dimension of both A and B: coalesced loads.
        As[ty][tx] = (row < M && k0 + tx < K) ? A[(size_t)row * K + k0 + tx] : 0.f;
        Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(size_t)(k0 + ty) * N + col] : 0.f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];  // As[ty][k]: broadcast in a warp
        __syncthreads();
    }
    if (row < M && col < N) {
        const size_t c = (size_t)row * N + col;
        C[c] = beta == 0.f ? alpha * acc : alpha * acc + beta * C[c];
    }
}
