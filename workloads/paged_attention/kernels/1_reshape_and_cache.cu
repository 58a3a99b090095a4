// reshape_and_cache: scatter this step's new K and V rows into the paged cache by slot mapping.
//
// key/value are [num_tokens][num_kv_heads][head_dim]; token t goes to slot slot_mapping[t] (negative:
// a padding token, skipped). One thread block per token; its threads copy the token's
// num_kv_heads * head_dim elements as 16-byte vectors, so the kernel is dtype-agnostic for 2-byte types
// and every global access is a full 16-byte transaction.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
reshape_and_cache_16b(const uint4* __restrict__ key, const uint4* __restrict__ value,
                      uint4* __restrict__ k_cache, uint4* __restrict__ v_cache,
                      const long long* __restrict__ slot_mapping, int num_kv_heads,
                      int vecs_per_head, int block_size) {
    const int token = blockIdx.x;
    const long long slot = slot_mapping[token];
    if (slot < 0) return;
    const long long block = slot / block_size;
    const int offset = (int)(slot - block * block_size);
    const int vecs_per_token = num_kv_heads * vecs_per_head;
    const uint4* src_k = key + (long long)token * vecs_per_token;
    const uint4* src_v = value + (long long)token * vecs_per_token;
    for (int i = threadIdx.x; i < vecs_per_token; i += blockDim.x) {
        const int head = i / vecs_per_head;
        const int vec = i - head * vecs_per_head;
        const long long dst = ((block * num_kv_heads + head) * block_size + offset) * vecs_per_head + vec;
        const uint4 k = paged::load_stream(src_k + i);
        const uint4 v = paged::load_stream(src_v + i);
        k_cache[dst] = k;
        v_cache[dst] = v;
    }
}
