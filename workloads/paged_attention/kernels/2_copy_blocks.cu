// copy_blocks: the batched copy-on-write copies the block manager queues (src -> dst pairs).
//
// A physical block of one cache is num_kv_heads * block_size * head_dim contiguous elements (see
// common.cuh), so a pair is one contiguous copy. Grid: (pair, cache) with cache 0 = K, 1 = V; each
// thread moves 16-byte vectors, four loads in flight before the stores.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
copy_blocks_16b(uint4* __restrict__ k_cache, uint4* __restrict__ v_cache,
                const long long* __restrict__ block_mapping, long long vecs_per_block) {
    const long long src = block_mapping[2 * blockIdx.x];
    const long long dst = block_mapping[2 * blockIdx.x + 1];
    uint4* cache = blockIdx.y == 0 ? k_cache : v_cache;
    const uint4* from = cache + src * vecs_per_block;
    uint4* to = cache + dst * vecs_per_block;
    constexpr int kUnroll = 4;
    long long i = threadIdx.x;
    for (; i + (kUnroll - 1) * blockDim.x < vecs_per_block; i += kUnroll * blockDim.x) {
        uint4 v[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) v[u] = paged::load_stream(from + i + u * blockDim.x);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) to[i + u * blockDim.x] = v[u];
    }
    for (; i < vecs_per_block; i += blockDim.x) to[i] = paged::load_stream(from + i);
}
