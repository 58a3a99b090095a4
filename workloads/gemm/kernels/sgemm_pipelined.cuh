// The pipelined SIMT SGEMM shared by 09 (hand-picked tile shape) and 10 (tile shape chosen by the
// autotuner for the device). Kernel 08's warp tiling plus two kinds of prefetch:
//
// 1. global -> shared with cp.async into a ring of STAGES buffers: while the warps compute on tile k,
//    the copies of tiles k+1 .. k+STAGES-1 are in flight, with no registers spent on staging and no
//    wait until cp.async.wait_group says the oldest has landed. A is still stored transposed, which
//    cp.async can only do one 4-byte element at a time (cp.async copies contiguous bytes); B goes in
//    16-byte copies when its rows are 16-byte aligned (N % 4 == 0).
// 2. shared -> registers one k ahead: the fragments for k+1 are loaded while the FMAs of k run, so the
//    LDS latency hides behind the independent FFMAs of step k.
//
// Tiles that lie wholly inside the matrices (all but the last block row/column and the K residue) are
// copied by a fully unrolled path with no bounds checks; the rest take a checked path that zero-fills,
// so ragged sizes need no other special case. The checked copy loop runs a data-dependent trip count per
// thread; taking it for every tile cost about a fifth of the issue slots (38 -> 47 TFLOP/s on an H200).
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
// KU: k steps unrolled in the inner loop (BK: the whole tile). A 128x256 tile at BK = 32 unrolls to
// about 70 KB of machine code per K tile; KU < BK keeps the loop body smaller than the instruction cache.
template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_, int KU_ = BK_>
struct PipelinedSgemm {
    static constexpr int THREADS = 32 * (BM_ / WM_) * (BN_ / WN_);
    static constexpr int MI = WM_ / 16, NI = WN_ / 32;
    static constexpr int A_STAGE = BK_ * (BM_ + PAD), B_STAGE = BK_ * BN_;
    static constexpr int SMEM_BYTES = STAGES_ * (A_STAGE + B_STAGE) * 4;
    static_assert(WM_ % 16 == 0 && WN_ % 32 == 0, "warp tile must hold whole 4x4 lane sub-tiles");
    static_assert((BM_ * BK_) % THREADS == 0 && (BK_ * BN_) % (4 * THREADS) == 0, "tile loads must divide");
    static_assert(KU_ % 2 == 0 && BK_ % KU_ == 0, "KU: even (fragment buffers alternate) and divides BK");

    // Interior tiles (the whole BM x BK slice of A, or BK x BN slice of B, in range) take the fast path:
    // fully unrolled, no bounds checks, every shared-memory offset a compile-time constant and each global
    // address one multiply-add from a per-thread base. Edge tiles (the last rows or columns of C, the K
    // residue, or B rows that are not 16-byte aligned) take the checked path with zero-fill.
    //
    // A is stored transposed, As[k][m], 4 bytes per cp.async. Eight consecutive lanes copy eight
    // consecutive k of one row (one 32-byte sector), a warp four consecutive rows: the shared stores land
    // in bank (4 * k + m) % 32, all 32 distinct, where one row per warp would put k and k + 8 in one bank.
    static constexpr int A_ROWS_PER_PASS = THREADS / 8;             // rows of A covered by one pass of 8 k
    static constexpr int A_PASSES = BM_ * BK_ / THREADS;
    static constexpr int B_ROWS_PER_PASS = THREADS / (BN_ / 4);    // k rows of B covered by one pass
    static constexpr int B_PASSES = BK_ * BN_ / 4 / THREADS;
    static_assert(BK_ % 8 == 0 && BM_ % A_ROWS_PER_PASS == 0, "A fast path: passes of 8 k x THREADS/8 rows");
    static_assert(THREADS % (BN_ / 4) == 0, "B fast path: whole rows of 16-byte chunks per pass");

    __device__ static void load_a_interior(float* As, const float* a_src, int K, int a_dst) {
#pragma unroll
        for (int i = 0; i < A_PASSES; ++i) {
            constexpr int ROW_PASSES = BM_ / A_ROWS_PER_PASS;
            const int dr = (i % ROW_PASSES) * A_ROWS_PER_PASS, dk = (i / ROW_PASSES) * 8;
            cp_async<4>(&As[a_dst + dk * (BM_ + PAD) + dr], a_src + (size_t)dr * K + dk, 4);
        }
    }

    __device__ static void load_b_interior(float* Bs, const float* b_src, int N, int b_dst) {
#pragma unroll
        for (int i = 0; i < B_PASSES; ++i)
            cp_async<16>(&Bs[b_dst + i * B_ROWS_PER_PASS * BN_], b_src + (size_t)(i * B_ROWS_PER_PASS) * N, 16);
    }

    // The checked path: any tile, any alignment; out-of-range elements are zero-filled.
    __device__ static void load_a_edge(float* As, const float* A, int M, int K, int row0, int k0) {
        for (int e = threadIdx.x; e < BM_ * BK_; e += THREADS) {
            const int c = e % 8 + 8 * (e / (8 * BM_)), r = (e / 8) % BM_;
            const bool ok = row0 + r < M && k0 + c < K;
            cp_async<4>(&As[c * (BM_ + PAD) + r], ok ? A + (size_t)(row0 + r) * K + k0 + c : A, ok ? 4 : 0);
        }
    }

    __device__ static void load_b_edge(float* Bs, const float* B, int N, int K, int col0, int k0, bool b_aligned) {
        for (int e = threadIdx.x; e < BK_ * BN_ / 4; e += THREADS) {
            const int r = e / (BN_ / 4), c = (e % (BN_ / 4)) * 4;
            const int row = k0 + r, col = col0 + c;
            float* dst = &Bs[r * BN_ + c];
            if (b_aligned) {
                const int valid = row < K ? max(0, min(4, N - col)) : 0;
                cp_async<16>(dst, valid ? B + (size_t)row * N + col : B, valid * 4);
            } else {
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
        const int full_k_tiles = K / BK_;                      // tiles with no K residue
        const bool a_interior = row0 + BM_ <= M;
        const bool b_interior = b_aligned && col0 + BN_ <= N;
        // Per-thread bases of the fast path (see load_a_interior / load_b_interior).
        const int a_row = tid / 8, a_k = tid % 8;
        const float* a_src = A + (size_t)(row0 + (a_interior ? a_row : 0)) * K + a_k;
        const int a_dst = a_k * (BM_ + PAD) + a_row;
        const int b_row = tid / (BN_ / 4), b_col = (tid % (BN_ / 4)) * 4;
        const float* b_src = B + (size_t)b_row * N + (b_interior ? col0 + b_col : 0);
        const int b_dst = b_row * BN_ + b_col;
        auto load_tile = [&](int stage, int kt) {
            float* as = As + stage * A_STAGE;
            float* bs = Bs + stage * B_STAGE;
            const int k0 = kt * BK_;
            if (a_interior && kt < full_k_tiles) load_a_interior(as, a_src + k0, K, a_dst);
            else load_a_edge(as, A, M, K, row0, k0);
            if (b_interior && kt < full_k_tiles) load_b_interior(bs, b_src + (size_t)k0 * N, N, b_dst);
            else load_b_edge(bs, B, N, K, col0, k0, b_aligned);
        };

#pragma unroll
        for (int s = 0; s < STAGES_ - 1; ++s) {
            if (s < k_tiles) load_tile(s, s);
            cp_async_commit();  // commit even when empty: group counting stays uniform
        }

        float acc[MI * 4][NI * 4] = {{0.f}};
        float a_frag[2][MI * 4], b_frag[2][NI * 4];
        for (int kt = 0; kt < k_tiles; ++kt) {
            cp_async_wait<STAGES_ - 2>();
            __syncthreads();
            const int next = kt + STAGES_ - 1;
            if (next < k_tiles) load_tile(next % STAGES_, next);
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
#pragma unroll(KU_ == BK_ ? BK_ / KU_ : 1)
            for (int kk = 0; kk < BK_; kk += KU_) {
#pragma unroll
                for (int u = 0; u < KU_; ++u) {
                    // KU is even, so step u always computes from buffer u % 2 and fills the other.
                    if (u + 1 < KU_ || kk + KU_ < BK_) load_frags(kk + u + 1, (u + 1) % 2);
#pragma unroll
                    for (int i = 0; i < MI * 4; ++i)
#pragma unroll
                        for (int j = 0; j < NI * 4; ++j) acc[i][j] += a_frag[u % 2][i] * b_frag[u % 2][j];
                }
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
