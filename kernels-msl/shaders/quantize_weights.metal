// Weight quantization, pass 2: scale, quantize and pack (after abs_sum_blocks reduced |W| to one
// canonical sum).
//
// Every thread derives the same scale from the sum (two exact divisions: cheaper than a barrier
// and a broadcast): s = max(sum / count, 1e-5), inv_s = 1 / s. Then thread i packs word i of the
// [N, ceil(K / 16)] packed matrix: code = clamp(round(w · inv_s), -1, 1) + 1 at bit offset
// code_shift(k % 16), padding positions (k >= K) code 1. Thread 0 also stores s (the engine's
// ternary tensors carry one f32 scale; consumers derive nothing else from it but s · a_m).
// `count` is (N · K) rounded to f32 by the host (as cpu-ref computes it), passed as bits.
//
// Grid: ceil(N · ceil(K / 16) / 256) threadgroups, linear, folded into x and y above 65535.
//
// Bindings:
//   buffer(0)  constant QuantizeWeightsParams&  params: the params (wgpu immediates)
//   buffer(1)  device const float*  weights: [N, K] row-major
//   buffer(2)  device const float*  abs_sum: [1], the canonical sum (last abs_sum_blocks level)
//   buffer(3)  device uint*  packed: [N, ceil(K / 16)] ternary words
//   buffer(4)  device float*  scale: [1] = s
//   buffer(5)  device atomic_uint*  status: group 1 binding 1; word 0 = 0 when the sum is NaN or
//              infinite (|W| overflowed f32, or a non-finite weight, whose index abs_sum_blocks
//              level 0 flags)

struct QuantizeWeightsParams {
    // Rows N.
    uint n;
    // Columns K.
    uint k;
    // Bits of (N * K) as f32, rounded to nearest.
    uint count_bits;
    // Unused; keeps the struct 16 bytes.
    uint pad0;
};

// Threads per threadgroup (the descriptor's workgroup size).
constexpr constant uint THREADS_PER_GROUP = 256u;

kernel void quantize_weights(constant QuantizeWeightsParams& params [[buffer(0)]],
                             device const float* weights [[buffer(1)]],
                             device const float* abs_sum [[buffer(2)]],
                             device uint* packed [[buffer(3)]],
                             device float* scale [[buffer(4)]],
                             device atomic_uint* status [[buffer(5)]],
                             uint3 group [[threadgroup_position_in_grid]],
                             uint3 groups [[threadgroups_per_grid]],
                             uint t [[thread_index_in_threadgroup]]) {
    // Everything on f32 bit patterns (exact_f32.metal): the sum, and so s, may be NaN or inf.
    const uint sum = as_type<uint>(abs_sum[0]);
    // s = max(sum / count, 1e-5): both non-negative, so their bit patterns order like the values.
    const uint s = max(exact_div(sum, params.count_bits), SCALE_EPS_BITS);
    const uint inv_s = exact_div(as_type<uint>(1.0f), s);

    const uint index = (group.x + group.y * groups.x) * THREADS_PER_GROUP + t;
    if (index == 0u) {
        scale[0] = as_type<float>(s);
        if (is_non_finite_bits(sum)) {
            atomic_fetch_min_explicit(&status[0], 0u, memory_order_relaxed);
        }
    }

    const uint wpr = ternary_words_per_row(params.k);
    if (index >= params.n * wpr) {
        return;
    }
    const uint row = index / wpr;
    const uint k0 = (index - row * wpr) * WEIGHTS_PER_WORD;
    device const float* w_row = weights + row * params.k;
    uint word = 0u;
    for (uint kk = 0u; kk < WEIGHTS_PER_WORD; ++kk) {
        const uint k = k0 + kk;
        const uint code = k < params.k ? ternary_code(as_type<uint>(w_row[k]), inv_s) : 1u;
        word = word | (code << code_shift(kk));
    }
    packed[index] = word;
}
