// Decode v5: v4's tensor-core loop with K/V staged through shared memory by cp.async (decode_mma_smem.cuh),
// copied in whole 128-byte lines.
//
// v4 (loads straight into registers) held 182-254 registers, so 2 blocks per SM, and prefetching more
// into registers did not help. Here the bytes in flight live in a shared-memory ring (PAGED_V5_STAGES
// iterations of PAGED_V5_TILES 8-token steps per warp), registers hold only the iteration being computed,
// and __launch_bounds__ asks for PAGED_V5_MIN_BLOCKS resident blocks per SM. The launch passes the ring
// as dynamic shared memory: paged_v5_config tells the host TILES and STAGES. Partials are merged by v2's
// reduce kernel.
#include "splitk.cuh"

#ifndef PAGED_V5_TILES
#define PAGED_V5_TILES 2
#endif
#ifndef PAGED_V5_STAGES
#define PAGED_V5_STAGES 2
#endif
#ifndef PAGED_V5_MIN_BLOCKS
#define PAGED_V5_MIN_BLOCKS 3
#endif

// Read by the host (kernels.py) to size the dynamic shared memory: {tiles, stages, warps}.
extern "C" __device__ const int paged_v5_config[3] = {PAGED_V5_TILES, PAGED_V5_STAGES, paged::kWarps};

#define PAGED_DECODE_V5(T, TN, D, G)                                                                      \
    extern "C" __global__ void __launch_bounds__(paged::kThreads, D >= 256 ? 1 : PAGED_V5_MIN_BLOCKS)                    \
        paged_decode_v5_##TN##_d##D##_g##G(                                                               \
            const T* q, const T* k_cache, const T* v_cache, const int* block_tables, const int* seq_lens, \
            T* out, float* part_o, float* part_m, float* part_l, int num_q_heads, int num_kv_heads,       \
            int max_blocks_per_seq, int block_size_log2, float scale, int partition_tokens,               \
            int max_partitions) {                                                                         \
        paged::decode_splitk<T, D, G, PAGED_V5_TILES, false, paged::kLoopMmaSmem, PAGED_V5_STAGES>(      \
            q, k_cache, v_cache, block_tables, seq_lens, out, part_o, part_m, part_l, num_q_heads,        \
            num_kv_heads, max_blocks_per_seq, block_size_log2, scale, partition_tokens, max_partitions);  \
    }

PAGED_INSTANTIATE(PAGED_DECODE_V5)
