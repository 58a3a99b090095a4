// Decode v2, split-K: each sequence is cut into partitions of `partition_tokens` tokens that separate
// thread blocks attend in parallel, then a reduce kernel merges them with their softmax statistics.
//
// Grid (max_partitions, num_q_heads / G, batch); the body and the reduce are in splitk.cuh.
// This is what fills the GPU at small batch and long context: (8, 32, 8, 32768, 128) has 64
// (sequence, KV head) pairs but 64 * 32768 / P thread blocks.
#include "splitk.cuh"

#define PAGED_DECODE_V2(T, TN, D, G)                                                                      \
    extern "C" __global__ void __launch_bounds__(paged::kThreads) paged_decode_v2_##TN##_d##D##_g##G(    \
        const T* q, const T* k_cache, const T* v_cache, const int* block_tables, const int* seq_lens,    \
        T* out, float* part_o, float* part_m, float* part_l, int num_q_heads, int num_kv_heads,           \
        int max_blocks_per_seq, int block_size_log2, float scale, int partition_tokens,                   \
        int max_partitions) {                                                                             \
        paged::decode_splitk<T, D, G>(q, k_cache, v_cache, block_tables, seq_lens, out, part_o, part_m,  \
                                      part_l, num_q_heads, num_kv_heads, max_blocks_per_seq,             \
                                      block_size_log2, scale, partition_tokens, max_partitions);         \
    }

#define PAGED_DECODE_V2_REDUCE(T, TN, D)                                                                   \
    extern "C" __global__ void __launch_bounds__(paged::kThreads) paged_decode_v2_reduce_##TN##_d##D(      \
        const float* part_o, const float* part_m, const float* part_l, const int* seq_lens, T* out,       \
        int num_q_heads, int partition_tokens, int max_partitions) {                                      \
        paged::decode_v2_reduce<T, D>(part_o, part_m, part_l, seq_lens, out, num_q_heads,                 \
                                      partition_tokens, max_partitions);                                  \
    }

PAGED_INSTANTIATE(PAGED_DECODE_V2)
PAGED_DECODE_V2_REDUCE(__half, f16, 64)
PAGED_DECODE_V2_REDUCE(__half, f16, 128)
PAGED_DECODE_V2_REDUCE(__half, f16, 256)
PAGED_DECODE_V2_REDUCE(__nv_bfloat16, bf16, 64)
PAGED_DECODE_V2_REDUCE(__nv_bfloat16, bf16, 128)
PAGED_DECODE_V2_REDUCE(__nv_bfloat16, bf16, 256)
