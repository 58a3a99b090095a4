// The pipelined SIMT SGEMM shared by 09 (hand-picked tile shape) and 10 (tile shape chosen by the
// autotuner for the device). Kernel 08's warp tiling plus two kinds of prefetch:
//
// 1. global -> shared with cp.async into a ring of STAGES buffers: while the warps compute on tile k,
//    the copies of tiles k+1 .. k+STAGES-1 are in flight, with no registers spent on staging and no
//    wait until cp.async.wait_group says the oldest has landed. A is still stored transposed, which
//    cp.async can only do one 4-byte element at a time (cp.async copies contiguous bytes); B goes in
//    16-byte copies when its rows are 16-byte aligned (N % 4 == 0). Out-of-range elements use the
//    zero-fill form (source size 0), so ragged edges need no separate path.
// 2. shared -> registers one k ahead: the fragments for k+1 are loaded while the FMAs of k run, so the
//    LDS latency hides behind 64 independent FFMAs.
//
// One __syncthreads per K tile: after it, every warp has finished tile k-1, so its buffer can be refilled.

#pragma once

#ifndef PAD
#define PAD 4
#endif

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// cp.async of `bytes` (4 or 16); src_bytes < bytes zero-fills the rest (0: all zeros, src not read).
template <int BYTES>
__device__ __forceinline__ void cp_async(void* dst, const void* src, int src_bytes) {
    if constexpr (BYTES == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                     "r"(src_bytes));
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                     "r"(src_bytes));
    }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <int BM_, int BN_>
__device__ __forceinline__ void store4_out(float* C, int M, int N, int row, int col, const float* v,
                                           float alpha, float beta, bool aligned) {
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

// Tile: BM x BN per block, BK per stage; warp tile WM x WN (lanes 4 x 8, 4x4 sub-tiles per lane).
template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_>
struct PipelinedSgemm {
    static constexpr int THREADS = 32 * (BM_ / WM_) * (BN_ / WN_);
    static constexpr int MI = WM_ / 16, NI = WN_ / 32;
    static constexpr int A_STAGE = BK_ * (BM_ + PAD), B_STAGE = BK_ * BN_;
    static constexpr int SMEM_BYTES = STAGES_ * (A_STAGE + B_STAGE) * 4;
    static_assert(WM_ % 16 == 0 && WN_ % 32 == 0, "warp tile must hold whole 4x4 lane sub-tiles");
    static_assert((BM_ * BK_) % THREADS == 0 && (BK_ * BN_) % (4 * THREADS) == 0, "tile loads must divide");

    __device__ static void load_tile(float* As, float* Bs, const float* A, const float* B, int M, int N, int K,
                                     int row0, int col0, int k0, bool b_aligned) {
        // A: consecutive threads take consecutive k of one row (coalesced reads), stored As[k][m].
#pragma unroll
        for (int e = threadIdx.x; e < BM_ * BK_; e += THREADS) {
            const int r = e / BK_, c = e % BK_;
            const bool ok = row0 + r < M && k0 + c < K;
            const float* src = ok ? A + (size_t)(row0 + r) * K + k0 + c : A;
            cp_async<4>(&As[c * (BM_ + PAD) + r], src, ok ? 4 : 0);
        }
#pragma unroll
        for (int e = threadIdx.x; e < BK_ * BN_ / 4; e += THREADS) {
            const int r = e / (BN_ / 4), c = (e % (BN_ / 4)) * 4;
            const int row = k0 + r, col = col0 + c;
            float* dst = &Bs[r * BN_ + c];
            if (b_aligned) {
                const int valid = row < K ? max(0, min(4, N - col)) : 0;
                cp_async<16>(dst, valid ? B + (size_t)row * N + col : B, valid * 4);
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const bool ok = row < K && col + j < N;
                    cp_async<4>(dst + j, ok ? B + (size_t)row * N + col + j : B, ok ? 4 : 0);
                }
            }
        }
    }

    __device__ static void run(int M, int N, int K, float alpha, const float* __restrict__ A,
                               const float* __restrict__ B, float beta, float* __restrict__ C) {
        extern __shared__ __align__(16) float smem[];
        float* As = smem;                       // STAGES x [BK][BM + PAD]
        float* Bs = smem + STAGES_ * A_STAGE;   // STAGES x [BK][BN]
        const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
        const int warp_row = (warp / (BN_ / WN_)) * WM_, warp_col = (warp % (BN_ / WN_)) * WN_;
        const int lane_row = (lane / 8) * 4, lane_col = (lane % 8) * 4;
        const int row0 = blockIdx.y * BM_, col0 = blockIdx.x * BN_;
        const bool b_aligned = (N % 4) == 0;
        const int k_tiles = (K + BK_ - 1) / BK_;

#pragma unroll
        for (int s = 0; s < STAGES_ - 1; ++s) {
            if (s < k_tiles) load_tile(As + s * A_STAGE, Bs + s * B_STAGE, A, B, M, N, K, row0, col0, s * BK_,
                                       b_aligned);
            cp_async_commit();  // commit even when empty: group counting stays uniform
        }

        float acc[MI * 4][NI * 4] = {{0.f}};
        float a_frag[2][MI * 4], b_frag[2][NI * 4];
        for (int kt = 0; kt < k_tiles; ++kt) {
            cp_async_wait<STAGES_ - 2>();
            __syncthreads();
            const int next = kt + STAGES_ - 1;
            if (next < k_tiles) {
                const int s = next % STAGES_;
                load_tile(As + s * A_STAGE, Bs + s * B_STAGE, A, B, M, N, K, row0, col0, next * BK_, b_aligned);
            }
            cp_async_commit();
            const float* a_stage = As + (kt % STAGES_) * A_STAGE;
            const float* b_stage = Bs + (kt % STAGES_) * B_STAGE;
            auto load_frags = [&](int k, int buf) {
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
                    *reinterpret_cast<float4*>(&a_frag[buf][4 * mi]) = *reinterpret_cast<const float4*>(
                        &a_stage[k * (BM_ + PAD) + warp_row + mi * 16 + lane_row]);
#pragma unroll
                for (int ni = 0; ni < NI; ++ni)
                    *reinterpret_cast<float4*>(&b_frag[buf][4 * ni]) = *reinterpret_cast<const float4*>(
                        &b_stage[k * BN_ + warp_col + ni * 32 + lane_col]);
            };
            load_frags(0, 0);
#pragma unroll
            for (int k = 0; k < BK_; ++k) {
                if (k + 1 < BK_) load_frags(k + 1, (k + 1) % 2);
#pragma unroll
                for (int i = 0; i < MI * 4; ++i)
#pragma unroll
                    for (int j = 0; j < NI * 4; ++j) acc[i][j] += a_frag[k % 2][i] * b_frag[k % 2][j];
            }
        }
        cp_async_wait<0>();
#pragma unroll
        for (int i = 0; i < MI * 4; ++i)
#pragma unroll
            for (int ni = 0; ni < NI; ++ni)
                store4_out<BM_, BN_>(C, M, N, row0 + warp_row + (i / 4) * 16 + lane_row + i % 4,
                                     col0 + warp_col + ni * 32 + lane_col, &acc[i][4 * ni], alpha, beta, b_aligned);
    }
};
