// The split-K decode body shared by decode v2 and v3, and the reduce kernel that merges partitions.
//
// Partition p of a sequence of length L covers tokens [p * P, min(L, (p + 1) * P)); thread blocks past
// the end of a short sequence exit at once, so ragged batches cost nothing for their padding. A sequence
// with a single partition writes its output directly and the reduce skips it; otherwise each partition
// writes its normalised output o_p (fp32) with its log2-domain max m_p and sum l_p, and the reduce
// computes sum_p w_p o_p / sum_p w_p with w_p = l_p * 2^(m_p - M).
#pragma once
#include "decode_core.cuh"
#include "decode_mma.cuh"
#include "decode_mma_smem.cuh"

namespace paged {

// Which inner loop: CUDA cores (attend_range), tensor cores from registers (attend_range_mma, v4), or
// tensor cores fed through a shared-memory ring (attend_range_mma_smem, v5; STAGES deep).
constexpr int kLoopCudaCores = 0;
constexpr int kLoopMma = 1;
constexpr int kLoopMmaSmem = 2;

// UNROLL = 8-token tiles per iteration for the mma loops; PREFETCH pipelines the register loads.
template <typename T, int D, int G, int UNROLL, bool PREFETCH, int LOOP, int STAGES, typename Epilogue>
__device__ __forceinline__ void attend(const T* q_rows, const T* k_cache, const T* v_cache, const int* table,
                                       int block_size_log2, int num_kv_heads, int kv_head, float scale, int start,
                                       int end, Scratch<D, G>& scratch, Epilogue epilogue) {
    constexpr int TILES = UNROLL > 0 ? UNROLL : 2;
    if constexpr (LOOP == kLoopMmaSmem) {
        attend_range_mma_smem<T, D, G, TILES, STAGES>(q_rows, k_cache, v_cache, table, block_size_log2,
                                                      num_kv_heads, kv_head, scale, start, end, scratch, epilogue);
    } else if constexpr (LOOP == kLoopMma) {
        attend_range_mma<T, D, G, TILES, PREFETCH>(q_rows, k_cache, v_cache, table, block_size_log2,
                                                   num_kv_heads, kv_head, scale, start, end, scratch, epilogue);
    } else {
        attend_range<T, D, G, UNROLL, PREFETCH>(q_rows, k_cache, v_cache, table, block_size_log2, num_kv_heads,
                                                kv_head, scale, start, end, scratch, epilogue);
    }
}

template <typename T, int D, int G, int UNROLL = 0, bool PREFETCH = false, int LOOP = kLoopCudaCores,
          int STAGES = 2>
__device__ __forceinline__ void decode_splitk(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ block_tables, const int* __restrict__ seq_lens, T* __restrict__ out,
    float* __restrict__ part_o, float* __restrict__ part_m, float* __restrict__ part_l,
    int num_q_heads, int num_kv_heads, int max_blocks_per_seq, int block_size_log2, float scale,
    int partition_tokens, int max_partitions) {
    __shared__ Scratch<D, G> scratch;
    const int p = blockIdx.x;
    const int qh0 = blockIdx.y * G;
    const int b = blockIdx.z;
    const int len = seq_lens[b];
    const int start = p * partition_tokens;
    if (start >= len && !(p == 0 && len == 0)) return;  // an empty sequence still writes zeros once
    const int end = min(len, start + partition_tokens);
    const int num_partitions = (len + partition_tokens - 1) / partition_tokens;
    const int kv_head = qh0 / (num_q_heads / num_kv_heads);
    const size_t row = (size_t)b * num_q_heads + qh0;
    T* out_rows = out + row * D;
    const int* table = block_tables + (size_t)b * max_blocks_per_seq;
    if (num_partitions <= 1) {
        attend<T, D, G, UNROLL, PREFETCH, LOOP, STAGES>(q + row * D, k_cache, v_cache, table, block_size_log2,
                                                num_kv_heads, kv_head, scale, start, end, scratch, [&](int g, int d, float value, float, float) {
                                  out_rows[g * D + d] = Convert<T>::from_float(value);
                              });
        return;
    }
    attend<T, D, G, UNROLL, PREFETCH, LOOP, STAGES>(q + row * D, k_cache, v_cache, table, block_size_log2,
                                            num_kv_heads, kv_head, scale, start, end, scratch, [&](int g, int d, float value, float m, float l) {
                              const size_t stat = (row + g) * max_partitions + p;
                              part_o[stat * D + d] = value;
                              if (d == 0) {
                                  part_m[stat] = m;
                                  part_l[stat] = l;
                              }
                          });
}

// One thread block per (query head, sequence); thread d owns output element d.
template <typename T, int D>
__device__ __forceinline__ void decode_v2_reduce(
    const float* __restrict__ part_o, const float* __restrict__ part_m, const float* __restrict__ part_l,
    const int* __restrict__ seq_lens, T* __restrict__ out, int num_q_heads, int partition_tokens,
    int max_partitions) {
    const int qh = blockIdx.x, b = blockIdx.y;
    const int num_partitions = (seq_lens[b] + partition_tokens - 1) / partition_tokens;
    if (num_partitions <= 1) return;
    const size_t row = (size_t)b * num_q_heads + qh;
    const float* m = part_m + row * max_partitions;
    const float* l = part_l + row * max_partitions;
    float m_max = -INFINITY;
    for (int p = 0; p < num_partitions; ++p) m_max = fmaxf(m_max, m[p]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float numerator = 0.f, denominator = 0.f;
        for (int p = 0; p < num_partitions; ++p) {
            const float weight = l[p] * fast_exp2(m[p] - m_max);
            numerator += weight * part_o[(row * max_partitions + p) * D + d];
            denominator += weight;
        }
        out[row * D + d] = Convert<T>::from_float(numerator / denominator);
    }
}

}  // namespace paged

