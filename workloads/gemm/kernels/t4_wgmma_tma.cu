// t4 Hopper wgmma fed by TMA (sm_90a): warp-specialized producer/consumer, persistent tile scheduler.
//
// Everything t3 did with 256 threads in lock-step is split by role. One producer warpgroup (one thread
// of it, in fact) drives the Tensor Memory Accelerator: each k-block is one 2D TMA copy of the 128x64 A
// tile and four of 64x64 B sub-tiles, landing in a 4-stage ring of 128-byte-swizzled shared memory and
// completing on that stage's "full" mbarrier (transaction-count based: no thread waits on each load).
// Two consumer warpgroups each own 64 rows of the 128x256 C tile and issue wgmma.m64n256k16 straight
// from shared memory (A K-major, B MN-major: B is row-major [k][n], so the B descriptor sets the
// transpose bit), 128 FP32 accumulators per thread. A consumer releases a stage (its "empty" mbarrier)
// once the wgmma reading it has retired (wait_group 1 keeps one k-block of MMAs in flight).
// setmaxnreg moves registers from the producer (40) to the consumers (232).
// The grid is persistent: one CTA per SM walks tiles tile += gridDim.x in a grouped order (GROUP_M rows
// of tiles at a time) so CTAs running together share A rows and B columns in L2; the producer already
// loads the next tile while the consumers run the epilogue.
// Ragged M, N, K: TMA zero-fills out-of-range box elements and the epilogue bounds-checks. TMA needs
// 16-byte row pitches, so the host passes pitched copies when K or N is not a multiple of 8 (launch
// code: workloads/gemm/tma.py). The tensor maps live in global memory (written before launch).

#include <cstdint>
#include "tc_common.cuh"

#define BM 128
#define BN 256
#define BK 64
#define STAGES 4
#define THREADS 384
#define GROUP_M 16
#ifndef T4_B_LBO
#define T4_B_LBO 8192  // MN-major B: byte stride between 64-column blocks (one TMA box each)
#endif
#ifndef T4_B_SBO
#define T4_B_SBO 1024  // MN-major B: byte stride between groups of 8 k-rows (8 x 128 B)
#endif

constexpr int A_STAGE_BYTES = BM * BK * 2;   // 16 KiB
constexpr int B_STAGE_BYTES = BK * BN * 2;   // 32 KiB
constexpr int B_BOX_BYTES = BK * 64 * 2;     // one 64(k) x 64(n) TMA box, 8 KiB

// wgmma shared-memory descriptor: start address, leading/stride byte offsets (16-byte units), 128B swizzle.
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
    uint64_t desc = 0;
    desc |= (uint64_t)((smem_addr & 0x3FFFF) >> 4);
    desc |= (uint64_t)((lbo & 0x3FFFF) >> 4) << 16;
    desc |= (uint64_t)((sbo & 0x3FFFF) >> 4) << 32;
    desc |= (uint64_t)1 << 62;  // swizzle mode 1 = 128-byte
    return desc;
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)));
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
    asm volatile(
        "{\n.reg .pred done;\nWAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)), "r"(parity));
}
__device__ __forceinline__ void tma_load_2d(void* dst, const void* tensor_map, uint64_t* bar, int c0, int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n"
        ::"r"(smem_u32(dst)), "l"(tensor_map), "r"(smem_u32(bar)), "r"(c0), "r"(c1) : "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator registers across an asynchronous wgmma.
__device__ __forceinline__ void fence_accumulators(float* d) {
#pragma unroll
    for (int i = 0; i < 128; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// One wgmma.m64n256k16 (FP32 accumulate) on shared-memory descriptors; TYPE is the PTX operand type.
#define DEFINE_WGMMA_M64N256K16(NAME, TYPE) \
__device__ __forceinline__ void NAME(float* d, uint64_t desc_a, uint64_t desc_b) {                                        \
    asm volatile(                                                                                                         \
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                                                        \
        "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " {"                                                 \
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                          \
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                                \
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                                \
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "                                \
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "                                \
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "                                \
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "                    \
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"                  \
        "}, %128, %129, p, 1, 1, 0, 1;\n}\n"                                                                              \
        :                                                                                                                 \
          "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                 \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),           \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),         \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),         \
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),         \
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),         \
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),         \
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),         \
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),         \
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),         \
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),         \
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),         \
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),     \
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])  \
        : "l"(desc_a), "l"(desc_b));                                                                                      \
}

DEFINE_WGMMA_M64N256K16(wgmma_m64n256k16_f16, "f16")
DEFINE_WGMMA_M64N256K16(wgmma_m64n256k16_bf16, "bf16")

// Tile index -> (tile row, tile column), GROUP_M tile rows at a time so concurrent CTAs share operands in L2.
__device__ __forceinline__ void tile_coords(int tile, int tiles_m, int tiles_n, int& tm, int& tn) {
    const int group_size = GROUP_M * tiles_n;
    const int first_m = (tile / group_size) * GROUP_M;
    const int group_m = min(tiles_m - first_m, GROUP_M);
    const int in_group = tile % group_size;
    tm = first_m + in_group % group_m;
    tn = in_group / group_m;
}

template <typename T>
__device__ __forceinline__ void wgmma_tile(float* d, uint64_t desc_a, uint64_t desc_b) {
    if constexpr (__is_same(T, __half)) wgmma_m64n256k16_f16(d, desc_a, desc_b);
    else wgmma_m64n256k16_bf16(d, desc_a, desc_b);
}

template <typename T>
__device__ __forceinline__ void wgmma_gemm(int M, int N, int K, float alpha, const void* tmap_a, const void* tmap_b,
                                           float beta, float* __restrict__ C) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // 128B-swizzled TMA destinations and wgmma operands want 1024-byte alignment.
    unsigned char* smem = reinterpret_cast<unsigned char*>(
        (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
    unsigned char* a_smem = smem;
    unsigned char* b_smem = smem + STAGES * A_STAGE_BYTES;
    uint64_t* full = reinterpret_cast<uint64_t*>(b_smem + STAGES * B_STAGE_BYTES);
    uint64_t* empty = full + STAGES;

    const int warpgroup = threadIdx.x / 128;
    const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BN - 1) / BN;
    const int tiles = tiles_m * tiles_n, k_blocks = (K + BK - 1) / BK;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 2);  // one arrival per consumer warpgroup
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        // Producer. Registers go to the consumers; one thread issues every TMA copy.
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (threadIdx.x == 0) {
            int stage = 0;
            unsigned phase = 0;
            for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
                int tm, tn;
                tile_coords(tile, tiles_m, tiles_n, tm, tn);
                for (int kb = 0; kb < k_blocks; ++kb) {
                    mbar_wait(&empty[stage], phase ^ 1);  // first pass through the ring: returns at once
                    mbar_expect_tx(&full[stage], A_STAGE_BYTES + B_STAGE_BYTES);
                    tma_load_2d(a_smem + stage * A_STAGE_BYTES, tmap_a, &full[stage], kb * BK, tm * BM);
#pragma unroll
                    for (int j = 0; j < BN / 64; ++j)
                        tma_load_2d(b_smem + stage * B_STAGE_BYTES + j * B_BOX_BYTES, tmap_b, &full[stage],
                                    tn * BN + j * 64, kb * BK);
                    if (++stage == STAGES) { stage = 0; phase ^= 1; }
                }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        const int consumer = warpgroup - 1;            // rows consumer*64 .. +63 of the C tile
        const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
        int stage = 0;
        unsigned phase = 0;
        float d[128];
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            int tm, tn;
            tile_coords(tile, tiles_m, tiles_n, tm, tn);
#pragma unroll
            for (int i = 0; i < 128; ++i) d[i] = 0.f;
            int previous = -1;
            for (int kb = 0; kb < k_blocks; ++kb) {
                mbar_wait(&full[stage], phase);
                const uint32_t a_base = smem_u32(a_smem + stage * A_STAGE_BYTES) + consumer * 64 * 128;
                const uint32_t b_base = smem_u32(b_smem + stage * B_STAGE_BYTES);
                fence_accumulators(d);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < BK / 16; ++kk) {
                    // A: K-major rows of 128 B; k advances 32 B inside the swizzle atom.
                    // B: MN-major; 16 k-rows of 128 B per step.
                    wgmma_tile<T>(d, make_desc(a_base + kk * 32, 16, 1024),
                                  make_desc(b_base + kk * 16 * 128, T4_B_LBO, T4_B_SBO));
                }
                wgmma_commit();
                wgmma_wait<1>();  // the previous k-block's MMAs are done: its stage can be refilled
                if (previous >= 0 && threadIdx.x % 128 == 0) mbar_arrive(&empty[previous]);
                previous = stage;
                if (++stage == STAGES) { stage = 0; phase ^= 1; }
            }
            wgmma_wait<0>();
            fence_accumulators(d);
            if (previous >= 0 && threadIdx.x % 128 == 0) mbar_arrive(&empty[previous]);
            // Accumulator layout of m64nNk16: warp w holds rows 16w..16w+15; for each 8-column group i,
            // d[4i], d[4i+1] are (lane/4, 2*(lane%4) + {0,1}) and d[4i+2], d[4i+3] eight rows below.
            const int row = tm * BM + consumer * 64 + warp * 16 + lane / 4;
#pragma unroll
            for (int i = 0; i < BN / 8; ++i) {
                const int col = tn * BN + i * 8 + 2 * (lane % 4);
                store_pair(C, M, N, row, col, d[4 * i], d[4 * i + 1], alpha, beta);
                store_pair(C, M, N, row + 8, col, d[4 * i + 2], d[4 * i + 3], alpha, beta);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
hgemm_wgmma_f16(int M, int N, int K, float alpha, const void* tmap_a, const void* tmap_b, float beta, float* C) {
    wgmma_gemm<__half>(M, N, K, alpha, tmap_a, tmap_b, beta, C);
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
hgemm_wgmma_bf16(int M, int N, int K, float alpha, const void* tmap_a, const void* tmap_b, float beta, float* C) {
    wgmma_gemm<__nv_bfloat16>(M, N, K, alpha, tmap_a, tmap_b, beta, C);
}
