// Decode v4: decode v2's split-K launch with the tensor-core inner loop of decode_mma.cuh.
//
// v2 spends, per token and lane, 2*G*8 FMAs plus G*log2(D/8) shuffles on CUDA cores; with G = 4 that
// arithmetic, not memory, set the pace (84% of contiguous SDPA). Here each 8-token warp step is D/16
// mma.m16n8k16 for the scores and D/8 movmatrix + mma.m16n8k8 for P.V, straight from the registers the
// 16-byte loads filled. PAGED_V4_TILES 8-token steps are loaded per iteration (default 2), and with
// PAGED_V4_PREFETCH (default 1) the next iteration's loads are issued before this one's mma. Partials are
// merged by v2's reduce kernel.
#include "splitk.cuh"

#ifndef PAGED_V4_TILES
#define PAGED_V4_TILES 2
#endif
#ifndef PAGED_V4_PREFETCH
#define PAGED_V4_PREFETCH 1
#endif

#define PAGED_DECODE_V4(T, TN, D, G)                                                                      \
    extern "C" __global__ void __launch_bounds__(paged::kThreads) paged_decode_v4_##TN##_d##D##_g##G(    \
        const T* q, const T* k_cache, const T* v_cache, const int* block_tables, const int* seq_lens,    \
        T* out, float* part_o, float* part_m, float* part_l, int num_q_heads, int num_kv_heads,           \
        int max_blocks_per_seq, int block_size_log2, float scale, int partition_tokens,                   \
        int max_partitions) {                                                                             \
        paged::decode_splitk<T, D, G, PAGED_V4_TILES, PAGED_V4_PREFETCH, paged::kLoopMma>(                                       \
            q, k_cache, v_cache, block_tables, seq_lens, out, part_o, part_m, part_l, num_q_heads,        \
            num_kv_heads, max_blocks_per_seq, block_size_log2, scale, partition_tokens, max_partitions);  \
    }

PAGED_INSTANTIATE(PAGED_DECODE_V4)
