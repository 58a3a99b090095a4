// The decode inner loop on tensor cores (mma.sync), straight from registers: no shared-memory staging.
//
// Per warp step, 8 consecutive tokens: quad r (lanes 4r..4r+3) loads token r's K and V rows, lane c of
// the quad a quarter of each row: 16-byte chunks c, c+4, ... (dim_of_word), so that each load
// instruction reads 64 contiguous bytes per row.
//  * S = Q K^T with mma m16n8k16: M = query heads of the group (G <= 8 real rows of 16), N = the 8 tokens,
//    K = head dim. A dot product does not care in which order it visits the dimensions, so k-step j takes
//    words 2j and 2j+1 of each lane's quarter for B (K) and the same words of Q's quarter for A: the K
//    row as loaded *is* the B fragment, no shuffles and no shared memory.
//  * O += P V with mma m16n8k8: A = P (each lane's two scores, packed to 16 bits, are already in the A
//    layout), B = V^T fragments made by movmatrix (an in-register 8x8 transpose) of word i of each lane's
//    V quarter. Output n-tile i then holds, in lane c, the two dims of word i of that lane's share.
// The softmax runs on the accumulator fragment: a lane holds two tokens of its head row; the row max
// needs two quad shuffles. This replaces v2's 2*G*D FMAs and G*log2(D/8) shuffles per token with about
// 3 mma per token and warp, which is what G = 4 needed (v2 reached 84% of SDPA, bound by issue slots).
#pragma once
#include "decode_core.cuh"

namespace paged {

template <typename T> struct Mma;

template <> struct Mma<__half> {
    // d[0..3] += A(16x16: rows g and g+8, a1 = a3 = 0: only 8 rows are used) * B(16x8)
    static __device__ __forceinline__ void k16(float (&d)[4], unsigned a0, unsigned a2, unsigned b0, unsigned b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ void k8(float (&d)[4], unsigned a0, unsigned b0) {
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(0u), "r"(b0));
    }
    static __device__ __forceinline__ unsigned pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<unsigned*>(&h);
    }
};

template <> struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void k16(float (&d)[4], unsigned a0, unsigned a2, unsigned b0, unsigned b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ void k8(float (&d)[4], unsigned a0, unsigned b0) {
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(0u), "r"(b0));
    }
    static __device__ __forceinline__ unsigned pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<unsigned*>(&h);
    }
};

// The head dims a lane holds: 16-byte chunks c, c+4, c+8, ... of the row (so the four lanes of a quad read
// 64 contiguous bytes per load instruction, full 32-byte sectors); word w of a lane's share covers dims
// dim_of_word(c, w) and dim_of_word(c, w) + 1.
__device__ __forceinline__ int dim_of_word(int c, int w) { return ((w >> 2) * 4 + c) * kVec + (w & 3) * 2; }

__device__ __forceinline__ unsigned transpose8x8(unsigned a) {
    unsigned d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(d) : "r"(a));
    return d;
}

// One warp's share of the attention with the arithmetic on tensor cores: its query fragment, its running
// output O (fragment layout above), and its softmax max m and sum l. `consume` takes TILES 8-token steps
// whose K and V rows (this lane's quarters) are in registers, however they got there; `finish` hands the
// warp's (m, l, O) to merge_warps. Shared by v4 (K/V loaded straight into registers) and v5 (staged
// through shared memory by cp.async).
template <typename T, int D, int G, int TILES>
struct MmaWarp {
    static_assert(G <= 8, "the mma row layout holds at most 8 query heads per KV head");
    static constexpr int QW = D / 8;        // 32-bit words in a lane's quarter row
    static constexpr int QV = QW / 4;       // 16-byte vectors in a lane's quarter row
    static constexpr int KSTEPS = D / 16;
    unsigned q[QW];
    float o[QW][4];
    float m, l, s_scale;
    int row, c;                             // head row in S/O (token row in a K/V tile); quarter of a row

    __device__ __forceinline__ MmaWarp(const T* __restrict__ q_rows, float scale) {
        const int lane = threadIdx.x & 31;
        row = lane >> 2;
        c = lane & 3;
#pragma unroll
        for (int v = 0; v < QV; ++v) {
            const uint4 raw = row < G ? *reinterpret_cast<const uint4*>(q_rows + row * D + (v * 4 + c) * kVec)
                                      : make_uint4(0, 0, 0, 0);
            q[4 * v] = raw.x; q[4 * v + 1] = raw.y; q[4 * v + 2] = raw.z; q[4 * v + 3] = raw.w;
        }
#pragma unroll
        for (int i = 0; i < QW; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
        m = -INFINITY;
        l = 0.f;
        s_scale = scale * kLog2e;
    }

    // Scores for every tile first (two accumulator chains per tile, so the D/16 dependent mma of a dot
    // product become two half-length chains), one softmax update per call, then P.V. Tokens >= end are
    // masked; their K/V words must be finite (zeros), since P = 0 still multiplies V.
    __device__ __forceinline__ void consume(int base, int end, const uint4 (&k_raw)[TILES][QV],
                                            const uint4 (&v_raw)[TILES][QV]) {
        float s[TILES][2][4];
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            const unsigned* kw = reinterpret_cast<const unsigned*>(k_raw[tile]);
#pragma unroll
            for (int h = 0; h < 2; ++h) s[tile][h][0] = s[tile][h][1] = s[tile][h][2] = s[tile][h][3] = 0.f;
#pragma unroll
            for (int j = 0; j < KSTEPS; ++j) {
                Mma<T>::k16(s[tile][j & 1], q[2 * j], q[2 * j + 1], kw[2 * j], kw[2 * j + 1]);
            }
        }
        float scores[TILES][2];
        float tile_max = -INFINITY;
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            const int t0 = base + tile * 8 + 2 * c;  // columns 0, 1: tokens t0, t0 + 1 of head `row`
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                scores[tile][e] = t0 + e < end ? (s[tile][0][e] + s[tile][1][e]) * s_scale : -INFINITY;
                tile_max = fmaxf(tile_max, scores[tile][e]);
            }
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
        const float m_new = fmaxf(m, tile_max);
        const float m_ref = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = fast_exp2(m - m_ref);
        l *= alpha;  // this lane's columns only; the quad is summed in finish()
        m = m_new;
#pragma unroll
        for (int i = 0; i < QW; ++i) {
            o[i][0] *= alpha;
            o[i][1] *= alpha;
        }
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            const float p0 = fast_exp2(scores[tile][0] - m_ref), p1 = fast_exp2(scores[tile][1] - m_ref);
            l += p0 + p1;
            const unsigned p = Mma<T>::pack(p0, p1);
            const unsigned* vw = reinterpret_cast<const unsigned*>(v_raw[tile]);
#pragma unroll
            for (int i = 0; i < QW; ++i) Mma<T>::k8(o[i], p, transpose8x8(vw[i]));
        }
    }

    template <typename Epilogue>
    __device__ __forceinline__ void finish(Scratch<D, G>& scratch, Epilogue epilogue) {
        const int warp = threadIdx.x >> 5;
        l += __shfl_xor_sync(kFullMask, l, 1);
        l += __shfl_xor_sync(kFullMask, l, 2);
        if (row < G) {
#pragma unroll
            for (int i = 0; i < QW; ++i) {
                *reinterpret_cast<float2*>(&scratch.o[warp][row][dim_of_word(c, i)]) =
                    make_float2(o[i][0], o[i][1]);
            }
            if (c == 0) {
                scratch.m[warp][row] = m;
                scratch.l[warp][row] = l;
            }
        }
        merge_warps<D, G>(scratch, epilogue);
    }
};

// Same contract as attend_range (decode_core.cuh); TILES = 8-token warp steps whose loads go out together,
// PREFETCH = issue the next iteration's loads before computing this one.
template <typename T, int D, int G, int TILES, bool PREFETCH, typename Epilogue>
__device__ __forceinline__ void attend_range_mma(
    const T* __restrict__ q_rows, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ block_table, int block_size_log2, int num_kv_heads, int kv_head, float scale,
    int start, int end, Scratch<D, G>& scratch, Epilogue epilogue) {
    using Warp = MmaWarp<T, D, G, TILES>;
    constexpr int QV = Warp::QV;
    constexpr int STEP = 8 * TILES;  // tokens per warp iteration
    const int warp = threadIdx.x >> 5;
    Warp state(q_rows, scale);
    const int row = state.row;
    const int offset_mask = (1 << block_size_log2) - 1;

    const size_t head_stride = (size_t)D << block_size_log2;
    const size_t block_stride = head_stride * num_kv_heads;
    const T* k_base = k_cache + kv_head * head_stride + state.c * kVec;
    const T* v_base = v_cache + kv_head * head_stride + state.c * kVec;

    auto load_tiles = [&](int base, uint4 (&k_raw)[TILES][QV], uint4 (&v_raw)[TILES][QV]) {
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            const int t = base + tile * 8 + row;
            if (t < end) {
                const int block = __ldg(block_table + (t >> block_size_log2));
                const size_t offset = (size_t)block * block_stride + (size_t)(t & offset_mask) * D;
#pragma unroll
                for (int v = 0; v < QV; ++v) {
                    k_raw[tile][v] = load_stream(k_base + offset + v * 4 * kVec);
                    v_raw[tile][v] = load_stream(v_base + offset + v * 4 * kVec);
                }
            } else {
#pragma unroll
                for (int v = 0; v < QV; ++v) k_raw[tile][v] = v_raw[tile][v] = make_uint4(0, 0, 0, 0);
            }
        }
    };

    int base = start + warp * STEP;
    if constexpr (PREFETCH) {
        // The next iteration's loads are issued before this one's mma: with the arithmetic on tensor
        // cores the warp is latency-bound, so keep two iterations of loads in flight.
        uint4 k_cur[TILES][QV], v_cur[TILES][QV];
        load_tiles(base, k_cur, v_cur);
        for (; base < end; base += kWarps * STEP) {
            uint4 k_next[TILES][QV], v_next[TILES][QV];
            load_tiles(base + kWarps * STEP, k_next, v_next);
            state.consume(base, end, k_cur, v_cur);
#pragma unroll
            for (int tile = 0; tile < TILES; ++tile) {
#pragma unroll
                for (int v = 0; v < QV; ++v) {
                    k_cur[tile][v] = k_next[tile][v];
                    v_cur[tile][v] = v_next[tile][v];
                }
            }
        }
    } else {
        for (; base < end; base += kWarps * STEP) {
            uint4 k_raw[TILES][QV], v_raw[TILES][QV];
            load_tiles(base, k_raw, v_raw);
            state.consume(base, end, k_raw, v_raw);
        }
    }
    state.finish(scratch, epilogue);
}

}  // namespace paged
