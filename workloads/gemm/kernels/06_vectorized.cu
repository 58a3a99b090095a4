// 06 vectorized 128-bit loads and a transposed A tile.
//
// Same 128x128x8 block tile and 8x8 thread tile as 05, but every global load is one float4 (LDG.128:
// a quarter of the load instructions) and A is stored TRANSPOSED in shared memory, As[k][m]. With A
// transposed, the 8 A values a thread needs at one k are contiguous, so the inner loop reads them with
// two LDS.128 instead of eight LDS.32; same for B. 16 -> 4 shared-load instructions per 64 FMAs.
// float4 needs 16-byte alignment: rows of A are aligned only when K % 4 == 0 (rows of B when N % 4 == 0),
// and the last partial vector of a ragged row must not read past the end, so both fall back to scalar
// loads (a block-uniform branch) with zeros for out-of-range elements.
// What is left: 2-way bank conflicts on the transposed store and on the B reads (see 07).

#define BM 128
#define BN 128
#define BK 8
#define TM 8
#define TN 8
#define THREADS 256

// Up to 4 consecutive floats from p; `valid` of them are in range, the rest read as 0.
__device__ __forceinline__ float4 load4(const float* p, int valid, bool aligned) {
    if (aligned && valid >= 4) return __ldg(reinterpret_cast<const float4*>(p));
    float4 v;
    v.x = valid > 0 ? p[0] : 0.f;
    v.y = valid > 1 ? p[1] : 0.f;
    v.z = valid > 2 ? p[2] : 0.f;
    v.w = valid > 3 ? p[3] : 0.f;
    return v;
}

__device__ __forceinline__ void store_out(float* C, int M, int N, int row, int col, float value, float alpha,
                                          float beta) {
    if (row < M && col < N) {
        const size_t c = (size_t)row * N + col;
        C[c] = beta == 0.f ? alpha * value : alpha * value + beta * C[c];
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
sgemm_vectorized(int M, int N, int K, float alpha, const float* __restrict__ A, const float* __restrict__ B,
                 float beta, float* __restrict__ C) {
    __shared__ __align__(16) float As[BK][BM];  // transposed: As[k][m]
    __shared__ __align__(16) float Bs[BK][BN];
    const int tid = threadIdx.x;
    const int trow = tid / (BN / TN), tcol = tid % (BN / TN);
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool a_aligned = (K % 4) == 0, b_aligned = (N % 4) == 0;
    // One float4 of A (row a_r, k a_c..a_c+3) and one of B (k b_r, cols b_c..b_c+3) per thread per tile.
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;
    float acc[TM][TN] = {{0.f}};
    for (int k0 = 0; k0 < K; k0 += BK) {
        const int a_valid = row0 + a_r < M ? min(4, K - (k0 + a_c)) : 0;
        const float4 a = load4(A + (size_t)(row0 + a_r) * K + k0 + a_c, a_valid, a_aligned);
        As[a_c + 0][a_r] = a.x;
        As[a_c + 1][a_r] = a.y;
        As[a_c + 2][a_r] = a.z;
        As[a_c + 3][a_r] = a.w;
        const int b_valid = k0 + b_r < K ? min(4, N - (col0 + b_c)) : 0;
        *reinterpret_cast<float4*>(&Bs[b_r][b_c]) =
            load4(B + (size_t)(k0 + b_r) * N + col0 + b_c, b_valid, b_aligned);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a_frag[TM], b_frag[TN];
#pragma unroll
            for (int i = 0; i < TM; i += 4)
                *reinterpret_cast<float4*>(&a_frag[i]) = *reinterpret_cast<const float4*>(&As[k][trow * TM + i]);
#pragma unroll
            for (int j = 0; j < TN; j += 4)
                *reinterpret_cast<float4*>(&b_frag[j]) = *reinterpret_cast<const float4*>(&Bs[k][tcol * TN + j]);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += a_frag[i] * b_frag[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j)
            store_out(C, M, N, row0 + trow * TM + i, col0 + tcol * TN + j, acc[i][j], alpha, beta);
}
