// Device read bandwidth: a large sum with 16-byte loads, the ceiling a decode kernel is measured against.
//
// Each thread keeps four independent 16-byte loads in flight per step of a grid-stride loop, sums the
// words as integers (no FP dependency chain to slow the loop), and one atomic per block folds the result
// so the compiler cannot drop any load.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
read_reduce(const uint4* __restrict__ data, long long num_vecs, unsigned long long* __restrict__ result) {
    constexpr int kUnroll = 4;
    unsigned int acc = 0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (kUnroll - 1) * stride < num_vecs; i += kUnroll * stride) {
        uint4 v[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) v[u] = paged::load_stream(data + i + u * stride);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) acc += v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < num_vecs; i += stride) {
        uint4 v = paged::load_stream(data + i);
        acc += v.x ^ v.y ^ v.z ^ v.w;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    if ((threadIdx.x & 31) == 0) atomicAdd(result, (unsigned long long)acc);
}
