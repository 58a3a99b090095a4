// The tensor-core decode loop (MmaWarp, decode_mma.cuh) fed through shared memory by cp.async, STAGES deep.
//
// Why: v4 loads K/V straight into the mma fragment layout, where a quad of lanes holds one token row, so
// each 16-byte load instruction reads 64 contiguous bytes of a row: half a 128-byte line per request.
// ncu on an H200 (v4, shape b128 h32 kv8 ctx4096) showed L2 throughput at 90% while DRAM sat at 80%:
// the L2 was serving twice the requests the bytes need. Staging decouples the two layouts: the copies use
// a line-friendly mapping (D / 8 consecutive lanes copy one whole row, so every request is full lines),
// and each lane then reads its fragment words from shared memory. It also moves the bytes in flight out
// of registers (v4: 182-254 registers, 2 blocks per SM).
//
// Per warp, a ring of STAGES slots of TILES 8-token tiles; a tile is K rows then V rows, [8][D] each, with
// the 16-byte chunk ch of row r stored at chunk ch ^ (4 * (r & 1)), so the fragment reads (a quarter-warp
// covers chunks 4v..4v+3 of two adjacent rows) hit 32 distinct banks. Lanes read other lanes' copies, so
// cp.async.wait_group is followed by __syncwarp, and a slot is refilled only after a __syncwarp that
// follows its last read. Tokens past `end` are zero-filled (src-size 0), so masked scores meet finite V.
// Block-table entries are read one iteration before their copies are issued, keeping the dependent
// table -> address -> copy chain off the critical path.
#pragma once
#include "decode_mma.cuh"

namespace paged {

__device__ __forceinline__ void cp_async_16(void* smem, const void* global, bool valid) {
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(global), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// Dynamic shared memory the loop needs per thread block (the host passes it at launch).
template <int D, int TILES, int STAGES>
constexpr int smem_ring_bytes() { return STAGES * kWarps * TILES * 2 * 8 * D * 2; }

template <typename T, int D, int G, int TILES, int STAGES, typename Epilogue>
__device__ __forceinline__ void attend_range_mma_smem(
    const T* __restrict__ q_rows, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const int* __restrict__ block_table, int block_size_log2, int num_kv_heads, int kv_head, float scale,
    int start, int end, Scratch<D, G>& scratch, Epilogue epilogue) {
    static_assert(STAGES >= 2, "a ring of one slot cannot overlap loads and compute");
    using Warp = MmaWarp<T, D, G, TILES>;
    constexpr int QV = Warp::QV;                    // fragment vectors per row and lane; also copies per tile
    constexpr int STEP = 8 * TILES;                 // tokens per warp iteration
    constexpr int STRIDE = kWarps * STEP;           // tokens between a warp's iterations
    constexpr int ROW = D / kVec;                   // 16-byte chunks in a row = lanes copying one row
    constexpr int ROWS_PER_COPY = 32 / ROW;         // rows one warp-wide copy instruction covers
    constexpr int TILE = 2 * 8 * ROW;               // uint4 per tile (K rows, then V rows)
    constexpr int SLOT = TILES * TILE;              // uint4 per stage per warp
    extern __shared__ uint4 ring_all[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    uint4* ring = ring_all + warp * STAGES * SLOT;

    Warp state(q_rows, scale);
    const int offset_mask = (1 << block_size_log2) - 1;
    const size_t head_stride = (size_t)D << block_size_log2;
    const size_t block_stride = head_stride * num_kv_heads;
    // Copy mapping: instruction i of a tile moves rows i * ROWS_PER_COPY + copy_row, chunk copy_chunk.
    const int copy_row = lane / ROW, copy_chunk = lane % ROW;
    const T* k_base = k_cache + kv_head * head_stride + copy_chunk * kVec;
    const T* v_base = v_cache + kv_head * head_stride + copy_chunk * kVec;
    auto swizzled = [](int r, int chunk) { return r * ROW + (chunk ^ ((r & 1) << 2)); };

    auto table_entries = [&](int base, int (&blocks)[TILES][QV]) {
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
#pragma unroll
            for (int i = 0; i < QV; ++i) {
                const int t = base + tile * 8 + i * ROWS_PER_COPY + copy_row;
                blocks[tile][i] = t < end ? __ldg(block_table + (t >> block_size_log2)) : 0;
            }
        }
    };
    auto issue = [&](int base, const int (&blocks)[TILES][QV], int stage) {
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            uint4* slot = ring + stage * SLOT + tile * TILE;
#pragma unroll
            for (int i = 0; i < QV; ++i) {
                const int r = i * ROWS_PER_COPY + copy_row;
                const int t = base + tile * 8 + r;
                const bool valid = t < end;
                const size_t offset =
                    valid ? (size_t)blocks[tile][i] * block_stride + (size_t)(t & offset_mask) * D : 0;
                const int at = swizzled(r, copy_chunk);
                cp_async_16(slot + at, k_base + offset, valid);
                cp_async_16(slot + 8 * ROW + at, v_base + offset, valid);
            }
        }
        cp_async_commit();
    };

    int base = start + warp * STEP;
    int blocks[TILES][QV];
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        table_entries(base + s * STRIDE, blocks);
        issue(base + s * STRIDE, blocks, s);
    }
    table_entries(base + (STAGES - 1) * STRIDE, blocks);
    int read_stage = 0, write_stage = STAGES - 1;
    for (; base < end; base += STRIDE) {
        __syncwarp();                                   // every lane is done reading write_stage
        issue(base + (STAGES - 1) * STRIDE, blocks, write_stage);
        table_entries(base + STAGES * STRIDE, blocks);  // used by the next iteration's issue
        cp_async_wait<STAGES - 1>();                    // this lane's copies of read_stage have landed
        __syncwarp();                                   // ... and every other lane's
        uint4 k_raw[TILES][QV], v_raw[TILES][QV];
#pragma unroll
        for (int tile = 0; tile < TILES; ++tile) {
            const uint4* slot = ring + read_stage * SLOT + tile * TILE;
#pragma unroll
            for (int v = 0; v < QV; ++v) {
                const int at = swizzled(state.row, 4 * v + state.c);  // chunk 4v + c: see dim_of_word
                k_raw[tile][v] = slot[at];
                v_raw[tile][v] = slot[8 * ROW + at];
            }
        }
        state.consume(base, end, k_raw, v_raw);
        read_stage = read_stage + 1 == STAGES ? 0 : read_stage + 1;
        write_stage = write_stage + 1 == STAGES ? 0 : write_stage + 1;
    }
    cp_async_wait<0>();  // zero-fill copies past the end may still be landing in the ring
    state.finish(scratch, epilogue);
}

}  // namespace paged
