// Helpers shared by the tensor-core kernels t1..t4: the two operand types, ragged-edge loads of 8
// consecutive 16-bit values, cp.async, and the C = alpha * acc + beta * C epilogue for pairs of columns.

#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 8 consecutive 16-bit values starting at p, `valid` of them in range (the rest zero). One 16-byte
// load when the row is 16-byte aligned and the whole vector is in range; else element by element.
template <typename T>
__device__ __forceinline__ uint4 load8(const T* p, int valid, bool aligned) {
    if (aligned && valid >= 8) return __ldg(reinterpret_cast<const uint4*>(p));
    union { uint4 v; unsigned short h[8]; } out;
    const unsigned short* raw = reinterpret_cast<const unsigned short*>(p);
#pragma unroll
    for (int i = 0; i < 8; ++i) out.h[i] = i < valid ? raw[i] : (unsigned short)0;
    return out.v;
}

// cp.async of 16 bytes with zero fill: src_bytes = 0 writes zeros without reading src.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Write C[row][col], C[row][col+1] (bounds-checked); beta == 0 never reads C.
__device__ __forceinline__ void store_pair(float* C, int M, int N, int row, int col, float v0, float v1,
                                           float alpha, float beta) {
    if (row >= M) return;
    float* p = C + (size_t)row * N + col;
    if (col + 1 < N && (N % 2) == 0) {
        float2 out = make_float2(alpha * v0, alpha * v1);
        if (beta != 0.f) {
            const float2 old = *reinterpret_cast<const float2*>(p);
            out.x += beta * old.x;
            out.y += beta * old.y;
        }
        *reinterpret_cast<float2*>(p) = out;
    } else {
        if (col < N) p[0] = beta == 0.f ? alpha * v0 : alpha * v0 + beta * p[0];
        if (col + 1 < N) p[1] = beta == 0.f ? alpha * v1 : alpha * v1 + beta * p[1];
    }
}

// mma.sync m16n8k16, FP32 accumulate, for __half or __nv_bfloat16 operands (raw 32-bit registers).
template <typename T>
__device__ __forceinline__ void mma_16816(float* d, const unsigned* a, const unsigned* b) {
    if constexpr (sizeof(T) == 2 && __is_same(T, __half)) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
}

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
