// t1 wmma: the tensor cores through the portable C++ fragment API (16x16x16 tiles, FP32 accumulate).
//
// Block tile 64x64, K step 32, 4 warps in 2x2, each warp a 32x32 tile = 2x2 accumulator fragments.
// Tiles are staged through registers into padded shared memory (rows of 40 and 72 halves: multiples
// of 8 as wmma requires, and shifted by 16 bytes per row against bank conflicts), then wmma loads
// fragments from there. Ragged edges are zero-filled on the way in; the accumulators go out through
// shared memory so the epilogue can bounds-check and apply alpha/beta. This is the simplest way onto
// the tensor cores, and the slowest: no pipelining, small tiles, HMMA fed through generic loads.

#include <mma.h>
#include "tc_common.cuh"

using namespace nvcuda;

#define BM 64
#define BN 64
#define BK 32
#define THREADS 128
#define A_LD (BK + 8)
#define B_LD (BN + 8)
#define C_LD (BN + 4)

template <typename T>
__device__ __forceinline__ void wmma_gemm(int M, int N, int K, float alpha, const T* __restrict__ A,
                                          const T* __restrict__ B, float beta, float* __restrict__ C) {
    __shared__ __align__(32) T As[BM * A_LD];
    __shared__ __align__(32) T Bs[BK * B_LD];
    __shared__ __align__(32) float Cs[BM * C_LD];
    const int tid = threadIdx.x, warp = tid / 32;
    const int warp_row = (warp / 2) * 32, warp_col = (warp % 2) * 32;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool a_aligned = (K % 8) == 0, b_aligned = (N % 8) == 0;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);
    for (int k0 = 0; k0 < K; k0 += BK) {
        // A tile 64x32 = 256 vectors of 8; B tile 32x64 = 256 vectors of 8; 128 threads, 2 each.
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
        for (int k = 0; k < BK; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_frag[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_frag[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a_frag[i], &As[(warp_row + 16 * i) * A_LD + k], A_LD);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b_frag[j], &Bs[k * B_LD + warp_col + 16 * j], B_LD);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(&Cs[(warp_row + 16 * i) * C_LD + warp_col + 16 * j], acc[i][j], C_LD,
                                    wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BM * BN / 2; e += THREADS) {
        const int r = e / (BN / 2), c = (e % (BN / 2)) * 2;
        store_pair(C, M, N, row0 + r, col0 + c, Cs[r * C_LD + c], Cs[r * C_LD + c + 1], alpha, beta);
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
hgemm_wmma_f16(int M, int N, int K, float alpha, const __half* A, const __half* B, float beta, float* C) {
    wmma_gemm<__half>(M, N, K, alpha, A, B, beta, C);
}

extern "C" __global__ void __launch_bounds__(THREADS)
hgemm_wmma_bf16(int M, int N, int K, float alpha, const __nv_bfloat16* A, const __nv_bfloat16* B, float beta,
                float* C) {
    wmma_gemm<__nv_bfloat16>(M, N, K, alpha, A, B, beta, C);
}
