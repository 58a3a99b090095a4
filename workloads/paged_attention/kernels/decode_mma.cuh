// The decode inner loop on tensor cores (mma.sync), straight from registers: no shared-memory staging.
//
// Per warp step, 8 consecutive tokens: quad r (lanes 4r..4r+3) loads token r's K and V rows, lane c of
// the quad the c-th quarter of each row (D/4 contiguous elements, 16-byte loads).
//  * S = Q K^T with mma m16n8k16: M = query heads of the group (G <= 8 real rows of 16), N = the 8 tokens,
//    K = head dim. A dot product does not care in which order it visits the dimensions, so k-step j takes
//    words 2j and 2j+1 of each lane's quarter for B (K) and the same words of Q's quarter for A: the K
//    row as loaded *is* the B fragment, no shuffles and no shared memory.
//  * O += P V with mma m16n8k8: A = P (each lane's two scores, packed to 16 bits, are already in the A
//    layout), B = V^T fragments made by movmatrix (an in-register 8x8 transpose) of word i of each lane's
//    V quarter. Output n-tile i then holds dims c*D/4 + 2i, +1 for lane c: each lane ends with D/4
//    contiguous output dims of its head row.
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

__device__ __forceinline__ unsigned transpose8x8(unsigned a) {
    unsigned d;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(d) : "r"(a));
    return d;
}

// Same contract as attend_range (decode_core.cuh); TILES = 8-token warp steps whose loads go out together.
template <typename T, int D, int G, int TILES, typename Epilogue>
__device__ __forceinline__ void attend_range_mma(
    const T* __restrict__ q_rows, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ block_table, int block_size_log2, int num_kv_heads, int kv_head, float scale,
    int start, int end, Scratch<D, G>& scratch, Epilogue epilogue) {
    static_assert(G <= 8, "the mma row layout holds at most 8 query heads per KV head");
    constexpr int QW = D / 8;        // 32-bit words in a lane's quarter row
    constexpr int QV = QW / 4;       // 16-byte vectors in a lane's quarter row
    constexpr int KSTEPS = D / 16;
    constexpr int STEP = 8 * TILES;  // tokens per warp iteration
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int row = lane >> 2;       // head row in S/O; token row in the loaded K/V tile
    const int c = lane & 3;          // which quarter of a row this lane holds
    const int offset_mask = (1 << block_size_log2) - 1;

    unsigned q[QW];
#pragma unroll
    for (int v = 0; v < QV; ++v) {
        const uint4 raw = row < G ? *reinterpret_cast<const uint4*>(q_rows + row * D + c * (D / 4) + v * kVec)
                                  : make_uint4(0, 0, 0, 0);
        q[4 * v] = raw.x; q[4 * v + 1] = raw.y; q[4 * v + 2] = raw.z; q[4 * v + 3] = raw.w;
    }
    float o[QW][4];
#pragma unroll
    for (int i = 0; i < QW; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m = -INFINITY, l = 0.f;
    const float s_scale = scale * kLog2e;

    const size_t head_stride = (size_t)D << block_size_log2;
    const size_t block_stride = head_stride * num_kv_heads;
    const T* k_base = k_cache + kv_head * head_stride + c * (D / 4);
    const T* v_base = v_cache + kv_head * head_stride + c * (D / 4);

    for (int base = start + warp * STEP; base < end; base += kWarps * STEP) {
        uint4 k_raw[TILES][QV], v_raw[TILES][QV];
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            const int t = base + tile * 8 + row;
            if (t < end) {
                const int block = __ldg(block_table + (t >> block_size_log2));
                const size_t offset = (size_t)block * block_stride + (size_t)(t & offset_mask) * D;
#pragma unroll
                for (int v = 0; v < QV; ++v) {
                    k_raw[tile][v] = load_stream(k_base + offset + v * kVec);
                    v_raw[tile][v] = load_stream(v_base + offset + v * kVec);
                }
            } else {
#pragma unroll
                for (int v = 0; v < QV; ++v) k_raw[tile][v] = v_raw[tile][v] = make_uint4(0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            const unsigned* kw = reinterpret_cast<const unsigned*>(k_raw[tile]);
            const unsigned* vw = reinterpret_cast<const unsigned*>(v_raw[tile]);
            float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int j = 0; j < KSTEPS; ++j) Mma<T>::k16(s, q[2 * j], q[2 * j + 1], kw[2 * j], kw[2 * j + 1]);
            const int t0 = base + tile * 8 + 2 * c;  // s[0], s[1]: tokens t0, t0 + 1 of head `row`
            const float s0 = t0 < end ? s[0] * s_scale : -INFINITY;
            const float s1 = t0 + 1 < end ? s[1] * s_scale : -INFINITY;
            float tile_max = fmaxf(s0, s1);
            tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
            const float m_new = fmaxf(m, tile_max);
            const float m_ref = m_new == -INFINITY ? 0.f : m_new;
            const float alpha = fast_exp2(m - m_ref);
            const float p0 = fast_exp2(s0 - m_ref), p1 = fast_exp2(s1 - m_ref);
            l = l * alpha + p0 + p1;  // this lane's two columns; the quad is summed at the end
            m = m_new;
            const unsigned p = Mma<T>::pack(p0, p1);
#pragma unroll
            for (int i = 0; i < QW; ++i) {
                o[i][0] *= alpha;
                o[i][1] *= alpha;
                Mma<T>::k8(o[i], p, transpose8x8(vw[i]));
            }
        }
    }
    l += __shfl_xor_sync(kFullMask, l, 1);
    l += __shfl_xor_sync(kFullMask, l, 2);
    if (row < G) {
#pragma unroll
        for (int i = 0; i < QW; ++i) {
            *reinterpret_cast<float2*>(&scratch.o[warp][row][c * (D / 4) + 2 * i]) = make_float2(o[i][0], o[i][1]);
        }
        if (c == 0) {
            scratch.m[warp][row] = m;
            scratch.l[warp][row] = l;
        }
    }
    merge_warps<D, G>(scratch, epilogue);
}

}  // namespace paged
