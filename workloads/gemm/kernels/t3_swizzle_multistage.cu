// t3 swizzled shared memory and a multi-stage cp.async pipeline.
//
// Two changes to t2. (1) Loads go global -> shared directly with cp.async into a ring of STAGES
// buffers, so STAGES-1 tiles are in flight while the tensor cores work on the current one (t2 stalls
// on every load). (2) Instead of padding, the 16-byte chunks of each shared-memory row are XOR-swizzled:
// chunk' = chunk ^ f(row). For B ([k][n], 512-byte rows) the 8 rows one ldmatrix phase reads would all
// sit in the same 4 banks; XOR with (row % 8) spreads them over all 32. For A ([m][k], 64-byte rows, two
// rows per 128-byte line) XOR with ((row / 2) % 4) does the same. Swizzling wastes no shared memory,
// which buys the larger 128x256 tile: 8 warps of 64x64, 128 accumulators per thread, twice the
// arithmetic per byte loaded of t2's 64x32 warp tile.
// Ragged or unaligned rows (K or N not a multiple of 8) are loaded element by element instead of by
// cp.async; zero-filled chunks cover the edges either way.

#include "tc_common.cuh"

#define BM 128
#define BN 256
#define BK 32
#define WM 64
#define WN 64
#define STAGES 4
#define THREADS 256

// Element offsets inside one stage, swizzled at 16-byte (8-element) granularity.
__device__ __forceinline__ int a_offset(int r, int k) { return r * BK + ((((k >> 3) ^ (r >> 1)) & 3) << 3) + (k & 7); }
__device__ __forceinline__ int b_offset(int r, int n) { return r * BN + (((n >> 3) ^ (r & 7)) << 3) + (n & 7); }

template <typename T>
__device__ __forceinline__ void load_stage(T* As, T* Bs, const T* A, const T* B, int M, int N, int K, int row0,
                                           int col0, int k0, bool a_aligned, bool b_aligned) {
#pragma unroll
    for (int v = threadIdx.x; v < BM * BK / 8; v += THREADS) {
        const int r = v / (BK / 8), c = (v % (BK / 8)) * 8;
        const int valid = row0 + r < M ? max(0, min(8, K - (k0 + c))) : 0;
        const T* src = A + (size_t)(row0 + r) * K + k0 + c;
        T* dst = &As[a_offset(r, c)];
        if (a_aligned) cp_async16(dst, valid ? src : A, valid * 2);
        else *reinterpret_cast<uint4*>(dst) = load8(src, valid, false);
    }
#pragma unroll
    for (int v = threadIdx.x; v < BK * BN / 8; v += THREADS) {
        const int r = v / (BN / 8), c = (v % (BN / 8)) * 8;
        const int valid = k0 + r < K ? max(0, min(8, N - (col0 + c))) : 0;
        const T* src = B + (size_t)(k0 + r) * N + col0 + c;
        T* dst = &Bs[b_offset(r, c)];
        if (b_aligned) cp_async16(dst, valid ? src : B, valid * 2);
        else *reinterpret_cast<uint4*>(dst) = load8(src, valid, false);
    }
}

template <typename T>
__device__ __forceinline__ void multistage_gemm(int M, int N, int K, float alpha, const T* __restrict__ A,
                                                const T* __restrict__ B, float beta, float* __restrict__ C) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    T* As = reinterpret_cast<T*>(smem_raw);         // STAGES x BM x BK
    T* Bs = As + STAGES * BM * BK;                  // STAGES x BK x BN
    constexpr int MI = WM / 16, NI = WN / 8;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int warp_row = (warp / (BN / WN)) * WM, warp_col = (warp % (BN / WN)) * WN;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool a_aligned = (K % 8) == 0, b_aligned = (N % 8) == 0;
    const int k_tiles = (K + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load_stage(As + s * BM * BK, Bs + s * BK * BN, A, B, M, N, K, row0, col0, s * BK,
                                    a_aligned, b_aligned);
        cp_async_commit();
    }
    float acc[MI][NI][4] = {};
    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile kt has landed for everyone; everyone is done with tile kt-1's buffer
        const int next = kt + STAGES - 1;
        if (next < k_tiles) {
            const int s = next % STAGES;
            load_stage(As + s * BM * BK, Bs + s * BK * BN, A, B, M, N, K, row0, col0, next * BK, a_aligned,
                       b_aligned);
        }
        cp_async_commit();
        const T* a_stage = As + (kt % STAGES) * BM * BK;
        const T* b_stage = Bs + (kt % STAGES) * BK * BN;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned a_frag[MI][4], b_frag[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                ldmatrix_x4(a_frag[mi], &a_stage[a_offset(warp_row + mi * 16 + lane % 16, kk + (lane / 16) * 8)]);
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                unsigned r[4];
                const int q = lane / 8;
                ldmatrix_x4_trans(r, &b_stage[b_offset(kk + (q % 2) * 8 + lane % 8, warp_col + nj * 16 + (q / 2) * 8)]);
                b_frag[2 * nj][0] = r[0];
                b_frag[2 * nj][1] = r[1];
                b_frag[2 * nj + 1][0] = r[2];
                b_frag[2 * nj + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) mma_16816<T>(acc[mi][ni], a_frag[mi], b_frag[ni]);
        }
    }
    cp_async_wait<0>();
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
            const int row = row0 + warp_row + mi * 16 + lane / 4;
            const int col = col0 + warp_col + ni * 8 + 2 * (lane % 4);
            store_pair(C, M, N, row, col, acc[mi][ni][0], acc[mi][ni][1], alpha, beta);
            store_pair(C, M, N, row + 8, col, acc[mi][ni][2], acc[mi][ni][3], alpha, beta);
        }
}

extern "C" __global__ void __launch_bounds__(THREADS)
hgemm_multistage_f16(int M, int N, int K, float alpha, const __half* A, const __half* B, float beta, float* C) {
    multistage_gemm<__half>(M, N, K, alpha, A, B, beta, C);
}

extern "C" __global__ void __launch_bounds__(THREADS)
hgemm_multistage_bf16(int M, int N, int K, float alpha, const __nv_bfloat16* A, const __nv_bfloat16* B,
                      float beta, float* C) {
    multistage_gemm<__nv_bfloat16>(M, N, K, alpha, A, B, beta, C);
}
