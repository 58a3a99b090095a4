// Shared by the paged-attention kernels: the cache layout, 16-byte vector loads and fp16/bf16 <-> fp32.
//
// KV cache layout (both K and V): [num_blocks][num_kv_heads][block_size][head_dim], so one (block, head)
// is block_size * head_dim contiguous elements and a token's head_dim row is one contiguous run that a
// group of lanes reads with 16-byte loads. Slot s of the cache is token s % block_size of block
// s / block_size.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace paged {

// 8 elements of a 2-byte type travel as one 16-byte uint4.
constexpr int kVec = 8;

template <typename T> struct Convert;

template <> struct Convert<__half> {
    static __device__ __forceinline__ float2 to_float2(unsigned int bits) {
        __half2 h = *reinterpret_cast<__half2*>(&bits);
        return __half22float2(h);
    }
    static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
};

template <> struct Convert<__nv_bfloat16> {
    static __device__ __forceinline__ float2 to_float2(unsigned int bits) {
        // bf16 is the top half of an fp32: widening is two shifts/masks, no conversion instruction.
        return make_float2(__uint_as_float(bits << 16), __uint_as_float(bits & 0xffff0000u));
    }
    static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&out)[kVec]) {
    const unsigned int words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float2 pair = Convert<T>::to_float2(words[i]);
        out[2 * i] = pair.x;
        out[2 * i + 1] = pair.y;
    }
}

// A streaming 16-byte load: the KV cache is read once per launch, so keep it out of L1.
__device__ __forceinline__ uint4 load_stream(const void* ptr) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(ptr));
    return r;
}

}  // namespace paged
