// The inner loop every decode kernel shares: one thread block attends G query heads (that share one KV
// head) over a token range [start, end) of one sequence, walking its block table, with online softmax.
//
// Lane mapping. A token's head_dim row is D / 8 lanes wide ("TG" lanes, 16 bytes each), so a warp reads
// 32 / TG consecutive tokens per step (D=128: two tokens, 512 contiguous bytes). Each lane keeps its
// 8-element slice of every query head in registers, so one K load serves all G heads: that is how GQA
// reads each KV block once for the whole group. A warp issues UNROLL steps of K and V loads before using
// any, which keeps 8 x 16 bytes per lane in flight, enough to cover HBM latency at 3-4 CTAs per SM.
//
// Scores are reduced across the TG lanes with xor-shuffles (every lane ends with the full dot product),
// then the softmax is updated once per UNROLL tokens (one rescale of the accumulator per batch, not per
// token). Everything is in the log2 domain: q is pre-scaled by scale * log2(e) and exp is ex2.approx.
// At the end, lanes of a warp that held different tokens merge their (m, l, o) by shuffles, warps merge
// through shared memory, and the caller's epilogue receives the normalised output with its m and l.
#pragma once
#include "common.cuh"

namespace paged {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

template <int D, int G>
struct Scratch {
    float o[kWarps][G][D];
    float m[kWarps][G];
    float l[kWarps][G];
};

// UNROLL: warp steps whose loads are issued together (0: the default, 4 steps, 2 for G = 8).
template <int D, int G, int UNROLL_ = 0>
struct DecodeShape {
    static constexpr int TG = D / kVec;               // lanes per token row: 8, 16, 32
    static constexpr int TPW = 32 / TG;               // tokens per warp step: 4, 2, 1
    static constexpr int UNROLL = UNROLL_ > 0 ? UNROLL_ : (G >= 8 ? 2 : 4);
    static constexpr int WARP_TOKENS = TPW * UNROLL;  // consecutive tokens one warp takes per iteration
    static constexpr int CTA_TOKENS = WARP_TOKENS * kWarps;
    static_assert(D % (kVec * 8) == 0 && D <= 256, "head_dim must be 64, 128 or 256");
};

// Merge the per-warp (m, l, o) in `scratch` (written by each warp) and hand each of the G*D outputs,
// normalised, to the epilogue: thread idx produces output (g, d) = (idx / D, idx % D).
template <int D, int G, typename Epilogue>
__device__ __forceinline__ void merge_warps(Scratch<D, G>& scratch, Epilogue epilogue) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * D; idx += kThreads) {
        const int g = idx / D, d = idx % D;
        float m_max = -INFINITY;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) m_max = fmaxf(m_max, scratch.m[w][g]);
        const float m_ref = m_max == -INFINITY ? 0.f : m_max;
        float l_sum = 0.f, o_sum = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            const float weight = fast_exp2(scratch.m[w][g] - m_ref);
            l_sum += scratch.l[w][g] * weight;
            o_sum += scratch.o[w][g][d] * weight;
        }
        epilogue(g, d, l_sum > 0.f ? o_sum / l_sum : 0.f, m_max, l_sum);
    }
}

// Epilogue: void(int g, int d, float o_normalised, float m_log2, float l) for each of the G*D outputs.
template <typename T, int D, int G, int UNROLL_ = 0, bool PREFETCH = false, typename Epilogue>
__device__ __forceinline__ void attend_range(
    const T* __restrict__ q_rows,          // G consecutive query-head rows of D elements
    const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ block_table,   // this sequence's row
    int block_size_log2, int num_kv_heads, int kv_head, float scale, int start, int end,
    Scratch<D, G>& scratch, Epilogue epilogue) {
    using S = DecodeShape<D, G, UNROLL_>;
    constexpr int TG = S::TG, TPW = S::TPW, UNROLL = S::UNROLL;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int tg_lane = lane % TG;  // which 8-element slice of the row this lane reads
    const int slot = lane / TG;     // which token of the warp's step this lane reads
    const int offset_mask = (1 << block_size_log2) - 1;

    float q[G][kVec];
    const float q_scale = scale * kLog2e;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const uint4 raw = *reinterpret_cast<const uint4*>(q_rows + g * D + tg_lane * kVec);
        unpack8<T>(raw, q[g]);
#pragma unroll
        for (int i = 0; i < kVec; ++i) q[g][i] *= q_scale;
    }

    float o[G][kVec];
    float m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = -INFINITY;
        l[g] = 0.f;
#pragma unroll
        for (int i = 0; i < kVec; ++i) o[g][i] = 0.f;
    }

    const size_t head_stride = (size_t)D << block_size_log2;   // elements in one (block, head)
    const size_t block_stride = head_stride * num_kv_heads;   // elements in one physical block
    const T* k_base = k_cache + kv_head * head_stride + tg_lane * kVec;
    const T* v_base = v_cache + kv_head * head_stride + tg_lane * kVec;

    // Issue the K and V loads of one warp iteration (tokens base + u * TPW + slot).
    auto load_step = [&](int base, uint4 (&k_raw)[UNROLL], uint4 (&v_raw)[UNROLL]) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int t = base + u * TPW + slot;
            if (t < end) {
                const int block = __ldg(block_table + (t >> block_size_log2));
                const size_t offset = (size_t)block * block_stride + (size_t)(t & offset_mask) * D;
                k_raw[u] = load_stream(k_base + offset);
                v_raw[u] = load_stream(v_base + offset);
            } else {
                k_raw[u] = make_uint4(0, 0, 0, 0);
                v_raw[u] = make_uint4(0, 0, 0, 0);
            }
        }
    };
    // Scores, softmax update and P.V for one warp iteration whose loads have been issued.
    auto consume_step = [&](int base, const uint4 (&k_raw)[UNROLL], const uint4 (&v_raw)[UNROLL]) {
        float s[UNROLL][G];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            float k[kVec];
            unpack8<T>(k_raw[u], k);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float acc = 0.f;
#pragma unroll
                for (int i = 0; i < kVec; ++i) acc = fmaf(q[g][i], k[i], acc);
                s[u][g] = acc;
            }
        }
#pragma unroll
        for (int offset = TG / 2; offset > 0; offset >>= 1) {
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
                for (int g = 0; g < G; ++g) s[u][g] += __shfl_xor_sync(kFullMask, s[u][g], offset);
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            if (base + u * TPW + slot >= end) {
#pragma unroll
                for (int g = 0; g < G; ++g) s[u][g] = -INFINITY;
            }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float m_new = m[g];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) m_new = fmaxf(m_new, s[u][g]);
            const float m_ref = m_new == -INFINITY ? 0.f : m_new;  // all masked so far: keep zeros
            const float alpha = fast_exp2(m[g] - m_ref);
            l[g] *= alpha;
#pragma unroll
            for (int i = 0; i < kVec; ++i) o[g][i] *= alpha;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                s[u][g] = fast_exp2(s[u][g] - m_ref);
                l[g] += s[u][g];
            }
            m[g] = m_new;
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            float v[kVec];
            unpack8<T>(v_raw[u], v);
#pragma unroll
            for (int g = 0; g < G; ++g) {
#pragma unroll
                for (int i = 0; i < kVec; ++i) o[g][i] = fmaf(s[u][g], v[i], o[g][i]);
            }
        }
    };

    int base = start + warp * S::WARP_TOKENS;
    if constexpr (PREFETCH) {
        // Software pipeline: the next iteration's loads are in flight while this one computes, so the
        // memory system never waits for the arithmetic (the reason G = 4 fell behind G = 1 in v1/v2).
        uint4 k_cur[UNROLL], v_cur[UNROLL];
        load_step(base, k_cur, v_cur);
        for (; base < end; base += S::CTA_TOKENS) {
            uint4 k_next[UNROLL], v_next[UNROLL];
            load_step(base + S::CTA_TOKENS, k_next, v_next);
            consume_step(base, k_cur, v_cur);
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                k_cur[u] = k_next[u];
                v_cur[u] = v_next[u];
            }
        }
    } else {
        for (; base < end; base += S::CTA_TOKENS) {
            uint4 k_raw[UNROLL], v_raw[UNROLL];
            load_step(base, k_raw, v_raw);
            consume_step(base, k_raw, v_raw);
        }
    }

    // Merge the warp's token slots (lanes slot*TG + tg_lane) into slot 0.
#pragma unroll
    for (int offset = TG; offset < 32; offset <<= 1) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float m_other = __shfl_xor_sync(kFullMask, m[g], offset);
            const float l_other = __shfl_xor_sync(kFullMask, l[g], offset);
            const float m_new = fmaxf(m[g], m_other);
            const float m_ref = m_new == -INFINITY ? 0.f : m_new;
            const float a = fast_exp2(m[g] - m_ref);
            const float b = fast_exp2(m_other - m_ref);
            l[g] = l[g] * a + l_other * b;
#pragma unroll
            for (int i = 0; i < kVec; ++i) o[g][i] = o[g][i] * a + __shfl_xor_sync(kFullMask, o[g][i], offset) * b;
            m[g] = m_new;
        }
    }
    if (slot == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float4* dst = reinterpret_cast<float4*>(&scratch.o[warp][g][tg_lane * kVec]);
            dst[0] = make_float4(o[g][0], o[g][1], o[g][2], o[g][3]);
            dst[1] = make_float4(o[g][4], o[g][5], o[g][6], o[g][7]);
            if (tg_lane == 0) {
                scratch.m[warp][g] = m[g];
                scratch.l[warp][g] = l[g];
            }
        }
    }
    merge_warps<D, G>(scratch, epilogue);
}

// Instantiate KERNEL_MACRO(T, TNAME, D, G) for fp16/bf16, head dims 64/128/256 and 1/2/4/8 heads per CTA.
#define PAGED_FOR_EACH_G(M, T, TN, D) M(T, TN, D, 1) M(T, TN, D, 2) M(T, TN, D, 4) M(T, TN, D, 8)
#define PAGED_FOR_EACH_D(M, T, TN) PAGED_FOR_EACH_G(M, T, TN, 64) PAGED_FOR_EACH_G(M, T, TN, 128) \
    PAGED_FOR_EACH_G(M, T, TN, 256)
#define PAGED_INSTANTIATE(M) PAGED_FOR_EACH_D(M, __half, f16) PAGED_FOR_EACH_D(M, __nv_bfloat16, bf16)

}  // namespace paged
