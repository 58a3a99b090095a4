// t2 mma.sync m16n8k16 with ldmatrix: the tensor-core instruction itself, fed from shared memory by
// the instruction made for it.
//
// wmma hides the fragment layout; here we own it. Block tile 128x128, K step 32, 8 warps in 2x4, each
// warp 64x32 = 4 x 4 mma tiles of 16x8 (64 FP32 accumulators per thread). Per 16-wide k step a warp
// issues 4 ldmatrix.x4 for A (one 16x16 A fragment each), 2 ldmatrix.x4.trans for B (B is stored
// k-major, [k][n], and .trans hands each thread the column pairs that the "col" B operand wants), and
// 16 mma. Rows are padded by 8 halves (16 bytes) so the 8 row addresses of one ldmatrix phase fall
// in different banks. Loads still go global -> registers -> shared with one buffer: t3 pipelines them.

#include "tc_common.cuh"

#define BM 128
#define BN 128
#define BK 32
#define WM 64
#define WN 32
#define THREADS 256
#define A_LD (BK + 8)
#define B_LD (BN + 8)

template <typename T>
__device__ __forceinline__ void mma_gemm(int M, int N, int K, float alpha, const T* __restrict__ A,
                                         const T* __restrict__ B, float beta, float* __restrict__ C) {
    __shared__ __align__(16) T As[BM * A_LD];
    __shared__ __align__(16) T Bs[BK * B_LD];
    constexpr int MI = WM / 16, NI = WN / 8;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int warp_row = (warp / (BN / WN)) * WM, warp_col = (warp % (BN / WN)) * WN;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool a_aligned = (K % 8) == 0, b_aligned = (N % 8) == 0;
    float acc[MI][NI][4] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int v = tid; v < BM * BK / 8; v += THREADS) {
            const int r = v / (BK / 8), c = (v % (BK / 8)) * 8;
            const int valid = row0 + r < M ? min(8, K - (k0 + c)) : 0;
            *reinterpret_cast<uint4*>(&As[r * A_LD + c]) = load8(A + (size_t)(row0 + r) * K + k0 + c, valid, a_aligned);
        }
#pragma unroll
        for (int v = tid; v < BK * BN / 8; v += THREADS) {
            const int r = v / (BN / 8), c = (v % (BN / 8)) * 8;
            const int valid = k0 + r < K ? min(8, N - (col0 + c)) : 0;
            *reinterpret_cast<uint4*>(&Bs[r * B_LD + c]) = load8(B + (size_t)(k0 + r) * N + col0 + c, valid, b_aligned);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned a_frag[MI][4], b_frag[NI][2];
            // A: lanes 0-15 address rows 0-15 at k, lanes 16-31 the same rows at k+8 -> a0..a3 in mma order.
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
                ldmatrix_x4(a_frag[mi], &As[(warp_row + mi * 16 + lane % 16) * A_LD + kk + (lane / 16) * 8]);
            // B: matrix q = lane/8 covers k rows (q%2)*8.. and columns (q/2)*8..: b0,b1 of two n8 tiles.
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                unsigned r[4];
                const int q = lane / 8;
                ldmatrix_x4_trans(r, &Bs[(kk + (q % 2) * 8 + lane % 8) * B_LD + warp_col + nj * 16 + (q / 2) * 8]);
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
        __syncthreads();
    }
    // Accumulator layout of m16n8: c0,c1 at (lane/4, 2*(lane%4) + {0,1}); c2,c3 eight rows below.
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
hgemm_mma_f16(int M, int N, int K, float alpha, const __half* A, const __half* B, float beta, float* C) {
    mma_gemm<__half>(M, N, K, alpha, A, B, beta, C);
}

extern "C" __global__ void __launch_bounds__(THREADS)
hgemm_mma_bf16(int M, int N, int K, float alpha, const __nv_bfloat16* A, const __nv_bfloat16* B, float beta,
               float* C) {
    mma_gemm<__nv_bfloat16>(M, N, K, alpha, A, B, beta, C);
}
