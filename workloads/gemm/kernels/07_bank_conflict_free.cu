// 07 bank-conflict-free shared memory: padding for the transposed store, split thread tiles for reads.
//
// Two conflicts remain in 06. (1) The transposed store As[k][m]: the two threads that share a row m
// (they load k 0..3 and 4..7) write As[k][m] and As[k+4][m]; with a 128-float row those are the same
// bank. Padding each row by 4 floats shifts row k+4 by 16 banks: conflict-free, still 16-byte aligned.
// (2) The B fragment reads: in 06 a thread reads 8 contiguous floats at tcol*8, so the 8 threads of a
// quarter-warp (one LDS.128 wavefront) span 256 bytes = two passes over the banks. Here each thread's
// 8x8 tile is split into 2x2 sub-tiles of 4x4 at offsets 0 and 64: a quarter-warp's float4 reads are
// then 128 contiguous bytes, one wavefront. A reads are broadcasts (16 threads share a row group).

#define BM 128
#define BN 128
#define BK 8
#define TM 8
#define TN 8
#define THREADS 256
#define PAD 4

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
sgemm_bank_conflict_free(int M, int N, int K, float alpha, const float* __restrict__ A,
                         const float* __restrict__ B, float beta, float* __restrict__ C) {
    __shared__ __align__(16) float As[BK][BM + PAD];
    __shared__ __align__(16) float Bs[BK][BN];
    const int tid = threadIdx.x;
    const int trow = tid / 16, tcol = tid % 16;  // 16x16 threads, each 2x2 sub-tiles of 4x4
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool a_aligned = (K % 4) == 0, b_aligned = (N % 4) == 0;
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
            for (int h = 0; h < 2; ++h) {
                *reinterpret_cast<float4*>(&a_frag[4 * h]) =
                    *reinterpret_cast<const float4*>(&As[k][h * (BM / 2) + trow * 4]);
                *reinterpret_cast<float4*>(&b_frag[4 * h]) =
                    *reinterpret_cast<const float4*>(&Bs[k][h * (BN / 2) + tcol * 4]);
            }
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
            store_out(C, M, N, row0 + (i / 4) * (BM / 2) + trow * 4 + i % 4,
                      col0 + (j / 4) * (BN / 2) + tcol * 4 + j % 4, acc[i][j], alpha, beta);
}
