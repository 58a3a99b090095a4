// Decode v3: decode v2 (split-K, GQA group per thread block) with a software-pipelined inner loop.
//
// In v1/v2 a warp issues its K/V loads, then computes on them, then issues the next loads: while it
// computes, nothing of its own is in flight. With G = 4 query heads per KV head the arithmetic per byte
// is four times that of G = 1, and v2 reached 84% of contiguous SDPA where G = 1 reached 99%. Here each
// warp issues iteration i+1's loads (block-table lookup included) before computing iteration i, with
// PAGED_V3_UNROLL steps per iteration (default 2, so the registers held for loads match v2's 4).
// Launch and partials exactly as v2; the partitions are merged by v2's reduce kernel.
#include "splitk.cuh"

#ifndef PAGED_V3_UNROLL
#define PAGED_V3_UNROLL 2
#endif

#define PAGED_DECODE_V3(T, TN, D, G)                                                                      \
    extern "C" __global__ void __launch_bounds__(paged::kThreads) paged_decode_v3_##TN##_d##D##_g##G(    \
        const T* q, const T* k_cache, const T* v_cache, const int* block_tables, const int* seq_lens,    \
        T* out, float* part_o, float* part_m, float* part_l, int num_q_heads, int num_kv_heads,           \
        int max_blocks_per_seq, int block_size_log2, float scale, int partition_tokens,                   \
        int max_partitions) {                                                                             \
        paged::decode_splitk<T, D, G, PAGED_V3_UNROLL, true>(                                             \
            q, k_cache, v_cache, block_tables, seq_lens, out, part_o, part_m, part_l, num_q_heads,        \
            num_kv_heads, max_blocks_per_seq, block_size_log2, scale, partition_tokens, max_partitions);  \
    }

PAGED_INSTANTIATE(PAGED_DECODE_V3)
