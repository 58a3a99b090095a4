// 08 warp tiling: an explicit block -> warp -> thread hierarchy, and 128-bit stores of C.
//
// 07 spreads a thread's 8x8 outputs over the whole 128x128 block tile. Here each of the 8 warps owns a
// 32x64 warp tile (warps arranged 4 x 2), and within it the 32 lanes are arranged 4 x 8, each lane
// holding 2x2 sub-tiles of 4x4 at strides 16 (rows) and 32 (columns). Per k a warp reads 4 distinct
// float4 of A (the other lanes get broadcasts) and 8 contiguous float4 of B (one 128-byte wavefront),
// so shared-memory traffic per warp drops and each warp touches a compact region. This is the shape
// the tensor-core kernels (t1..t4) use too, and the layout 09/10 build on. C is written with float4
// stores where a row's 4 columns are in range and N % 4 == 0.

#define BM 128
#define BN 128
#define BK 8
#define WM 32
#define WN 64
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

// Write 4 consecutive outputs of one row: one STG.128 when possible, else element by element.
__device__ __forceinline__ void store4(float* C, int M, int N, int row, int col, const float* v, float alpha,
                                      float beta, bool aligned) {
    if (row >= M) return;
    float* p = C + (size_t)row * N + col;
    if (aligned && col + 4 <= N) {
        float4 out = make_float4(alpha * v[0], alpha * v[1], alpha * v[2], alpha * v[3]);
        if (beta != 0.f) {
            const float4 old = *reinterpret_cast<const float4*>(p);
            out.x += beta * old.x; out.y += beta * old.y; out.z += beta * old.z; out.w += beta * old.w;
        }
        *reinterpret_cast<float4*>(p) = out;
        return;
    }
    for (int j = 0; j < 4 && col + j < N; ++j) p[j] = beta == 0.f ? alpha * v[j] : alpha * v[j] + beta * p[j];
}

extern "C" __global__ void __launch_bounds__(THREADS)
sgemm_warptiling(int M, int N, int K, float alpha, const float* __restrict__ A, const float* __restrict__ B,
                 float beta, float* __restrict__ C) {
    __shared__ __align__(16) float As[BK][BM + PAD];
    __shared__ __align__(16) float Bs[BK][BN];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int warp_row = (warp / (BN / WN)) * WM, warp_col = (warp % (BN / WN)) * WN;
    const int lane_row = (lane / 8) * 4, lane_col = (lane % 8) * 4;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool a_aligned = (K % 4) == 0, b_aligned = (N % 4) == 0;
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;
    constexpr int MI = WM / 16, NI = WN / 32;  // 4x4 sub-tiles per lane: 2 x 2
    float acc[MI * 4][NI * 4] = {{0.f}};
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
            float a_frag[MI * 4], b_frag[NI * 4];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                *reinterpret_cast<float4*>(&a_frag[4 * mi]) =
                    *reinterpret_cast<const float4*>(&As[k][warp_row + mi * 16 + lane_row]);
#pragma unroll
            for (int ni = 0; ni < NI; ++ni)
                *reinterpret_cast<float4*>(&b_frag[4 * ni]) =
                    *reinterpret_cast<const float4*>(&Bs[k][warp_col + ni * 32 + lane_col]);
#pragma unroll
            for (int i = 0; i < MI * 4; ++i)
#pragma unroll
                for (int j = 0; j < NI * 4; ++j) acc[i][j] += a_frag[i] * b_frag[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < MI * 4; ++i)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
            store4(C, M, N, row0 + warp_row + (i / 4) * 16 + lane_row + i % 4,
                   col0 + warp_col + ni * 32 + lane_col, &acc[i][4 * ni], alpha, beta, b_aligned);
}
