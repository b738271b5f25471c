// One level of the canonical absolute-value sum of `layout.rs` (weight quantization, pass 1).
//
// One threadgroup of 256 threads per block of 4096 values (the last block zero-padded):
//   1. thread t sums |e[t + 256 r]| for r = 0..16 sequentially, starting from 0;
//   2. tree over the 256 partial sums, strides 128, 64, 32 in threadgroup memory, then 16 .. 1
//      with simd_shuffle_down inside simdgroup 0: p_t = p_t + p_{t + stride} for t < stride;
//   3. p_0 is the block's sum.
// Every addition is exact_abs_add (correctly rounded on bit patterns), so the order above is the
// one executed whatever the compiler's fast-math mode. The partial sums are f32 bit patterns
// (`uint`) from load to store: they may overflow to infinity or be NaN, which fast math lets the
// compiler assume a float never is. The host dispatches levels until one value remains: level 0
// reads the weights, level L + 1 reads the block sums of level L. (Padding adds +0.0, which
// leaves a partial sum unchanged, so out-of-range elements are simply skipped.)
//
// Grid: ceil(count / 4096) threadgroups, linear, folded into x and y when above 65535.
//
// Bindings:
//   buffer(0)  constant AbsSumParams&  params: the params (wgpu immediates)
//   buffer(1)  device const float*  values: this level's input, `count` floats
//   buffer(2)  device float*  block_sums: ceil(count / 4096) floats
//   buffer(3)  device atomic_uint*  status: group 1 binding 1; word 0 = smallest index of a NaN/inf
//              value, when params.check_finite != 0

struct AbsSumParams {
    // Values in this level.
    uint count;
    // 1 on level 0 (the weights): flag NaN/inf inputs in status word 0; 0 on later levels.
    uint check_finite;
    // Unused; keeps the struct 16 bytes.
    uint pad0;
    // Unused.
    uint pad1;
};

// Threads per threadgroup (the descriptor's workgroup size; lanes of layout::SUM_LANES).
constexpr constant uint THREADS_PER_GROUP = 256u;
// Values per block (layout::SUM_BLOCK).
constexpr constant uint SUM_BLOCK = 4096u;
// Sequential additions per thread: SUM_BLOCK / THREADS_PER_GROUP.
constexpr constant uint SUM_ROUNDS = 16u;

kernel void abs_sum_blocks(constant AbsSumParams& params [[buffer(0)]],
                           device const float* values [[buffer(1)]],
                           device float* block_sums [[buffer(2)]],
                           device atomic_uint* status [[buffer(3)]],
                           uint3 group [[threadgroup_position_in_grid]],
                           uint3 groups [[threadgroups_per_grid]],
                           uint t [[thread_index_in_threadgroup]],
                           uint lane [[thread_index_in_simdgroup]],
                           uint simd_id [[simdgroup_index_in_threadgroup]]) {
    threadgroup uint partial[THREADS_PER_GROUP];

    const uint block = group.x + group.y * groups.x;
    const uint blocks = (params.count + SUM_BLOCK - 1u) / SUM_BLOCK;
    if (block >= blocks) {
        // The whole threadgroup leaves together (extra groups of a folded grid).
        return;
    }

    // 1. Sequential lane sums, in the canonical order.
    const uint base = block * SUM_BLOCK;
    uint acc = 0u;
    uint bad = STATUS_CLEAR;
    for (uint r = 0u; r < SUM_ROUNDS; ++r) {
        const uint i = base + t + r * THREADS_PER_GROUP;
        if (i < params.count) {
            const uint v = as_type<uint>(values[i]);
            if (is_non_finite_bits(v)) {
                bad = min(bad, i);
            }
            acc = exact_abs_add(acc, v);
        }
    }
    if (params.check_finite != 0u && bad != STATUS_CLEAR) {
        atomic_fetch_min_explicit(&status[0], bad, memory_order_relaxed);
    }

    // 2. Tree over the lanes: strides 128, 64, 32 through threadgroup memory.
    partial[t] = acc;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint stride = THREADS_PER_GROUP / 2u; stride >= 32u; stride = stride / 2u) {
        if (t < stride) {
            partial[t] = exact_abs_add(partial[t], partial[t + stride]);
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }

    // Strides 16 .. 1 inside simdgroup 0 (lanes t >= stride compute values nobody uses).
    if (simd_id == 0u) {
        uint v = partial[lane];
        for (uint stride = 16u; stride > 0u; stride = stride / 2u) {
            const uint other = simd_shuffle_down(v, ushort(stride));
            v = exact_abs_add(v, other);
        }
        if (lane == 0u) {
            block_sums[block] = as_type<float>(v);
        }
    }
}
