// Decode v1: one thread block per (sequence, group of G query heads), walking the whole block table.
//
// Grid (num_q_heads / G, batch). With G = num_q_heads / num_kv_heads (the whole GQA group) each KV block
// is read once for all the query heads that share it; with G = 1 the same kernel reads it once per query
// head, the comparison point for GQA sharing. Parallelism is batch * heads / G thread blocks, so long
// contexts with small batches leave most of the GPU idle: decode v2 splits the sequence for that.
#include "decode_core.cuh"

namespace paged {

template <typename T, int D, int G>
__device__ __forceinline__ void decode_v1(
    const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ block_tables, const int* __restrict__ seq_lens, T* __restrict__ out,
    int num_q_heads, int num_kv_heads, int max_blocks_per_seq, int block_size_log2, float scale) {
    __shared__ Scratch<D, G> scratch;
    const int b = blockIdx.y;
    const int qh0 = blockIdx.x * G;
    const int kv_head = qh0 / (num_q_heads / num_kv_heads);
    const size_t row = (size_t)b * num_q_heads + qh0;
    T* out_rows = out + row * D;
    attend_range<T, D, G>(q + row * D, k_cache, v_cache, block_tables + (size_t)b * max_blocks_per_seq,
                          block_size_log2, num_kv_heads, kv_head, scale, 0, seq_lens[b], scratch,
                          [&](int g, int d, float value, float, float) {
                              out_rows[g * D + d] = Convert<T>::from_float(value);
                          });
}

}  // namespace paged

#define PAGED_DECODE_V1(T, TN, D, G)                                                                      \
    extern "C" __global__ void __launch_bounds__(paged::kThreads) paged_decode_v1_##TN##_d##D##_g##G(    \
        const T* q, const T* k_cache, const T* v_cache, const int* block_tables, const int* seq_lens,    \
        T* out, int num_q_heads, int num_kv_heads, int max_blocks_per_seq, int block_size_log2,           \
        float scale) {                                                                                    \
        paged::decode_v1<T, D, G>(q, k_cache, v_cache, block_tables, seq_lens, out, num_q_heads,         \
                                  num_kv_heads, max_blocks_per_seq, block_size_log2, scale);              \
    }

PAGED_INSTANTIATE(PAGED_DECODE_V1)
