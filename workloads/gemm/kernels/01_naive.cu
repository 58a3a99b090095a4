// 01 naive: one thread per output element, straight from global memory.
//
// Row-major C[M][N] = alpha * A[M][K] * B[K][N] + beta * C. threadIdx.x walks the ROWS of C, so the 32
// threads of a warp read 32 different rows of A (stride K floats: 32 separate memory transactions) and
// write 32 different rows of C. That uncoalesced access is what kernel 02 fixes; here it is the baseline.
// beta == 0 never reads C (BLAS semantics: C may hold garbage or NaN then).

extern "C" __global__ void sgemm_naive(int M, int N, int K, float alpha, const float* __restrict__ A,
                                       const float* __restrict__ B, float beta, float* __restrict__ C) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    const int col = blockIdx.y * blockDim.y + threadIdx.y;
    if (row >= M || col >= N) return;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) acc += A[(size_t)row * K + k] * B[(size_t)k * N + col];
    const size_t c = (size_t)row * N + col;
    C[c] = beta == 0.f ? alpha * acc : alpha * acc + beta * C[c];
}
