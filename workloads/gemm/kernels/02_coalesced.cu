// 02 coalesced global access: consecutive threads own consecutive COLUMNS of C.
//
// Same arithmetic as 01, but a block of 1024 threads covers a 32x32 tile of C with threadIdx.x % 32
// walking the columns. A warp then reads one A element (broadcast), 32 consecutive floats of a B row
// (one 128-byte transaction) and writes 32 consecutive floats of C. Global loads per FMA stay at two,
// so the kernel is still bound by L1/L2 bandwidth; kernel 03 reuses data through shared memory.

#define TILE 32

extern "C" __global__ void sgemm_coalesced(int M, int N, int K, float alpha, const float* __restrict__ A,
                                           const float* __restrict__ B, float beta, float* __restrict__ C) {
    const int row = blockIdx.y * TILE + threadIdx.x / TILE;
    const int col = blockIdx.x * TILE + threadIdx.x % TILE;
    if (row >= M || col >= N) return;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) acc += A[(size_t)row * K + k] * B[(size_t)k * N + col];
    const size_t c = (size_t)row * N + col;
    C[c] = beta == 0.f ? alpha * acc : alpha * acc + beta * C[c];
}
