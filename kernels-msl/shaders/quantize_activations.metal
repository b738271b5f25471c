// Activation quantization (the input of bitlinear_gemm): one threadgroup per row of [rows, K].
//
//   1. absmax of the row as the max of sign-cleared bit patterns (exact in any order; simd_max,
//      then a max over the 8 simdgroups); NaN/inf are left out of the max and flagged;
//   2. a = max(absmax, 1e-5), inv = 127 / a with the correctly rounded exact_div;
//   3. xq = clamp(round_half_even(x · inv), -128, 127), packed 4 per u32 little-endian, each row
//      padded with zero bytes to 4 · ceil(K / 16) words; a non-finite x is quantized as 0.
//
// Grid: `rows` threadgroups, linear, folded into x and y above 65535.
//
// Bindings:
//   buffer(0)  constant QuantizeActParams&  params: the params (wgpu immediates)
//   buffer(1)  device const float*  x: [rows, K] row-major
//   buffer(2)  device uint*  packed: [rows, 4 · ceil(K / 16)] words
//   buffer(3)  device float*  absmax: [rows], the clamped absmax a of each row
//   buffer(4)  device atomic_uint*  status: group 1 binding 1; word 0 = smallest flat index of a
//              NaN/inf in x

struct QuantizeActParams {
    // Rows in this dispatch.
    uint rows;
    // Values per row K.
    uint k;
    // Unused; keeps the struct 16 bytes.
    uint pad0;
    // Unused.
    uint pad1;
};

// Threads per threadgroup (the descriptor's workgroup size).
constexpr constant uint THREADS_PER_GROUP = 256u;
// Simdgroups per threadgroup (32 lanes each).
constexpr constant uint SIMDGROUPS = 8u;

kernel void quantize_activations(constant QuantizeActParams& params [[buffer(0)]],
                                 device const float* x [[buffer(1)]],
                                 device uint* packed [[buffer(2)]],
                                 device float* absmax [[buffer(3)]],
                                 device atomic_uint* status [[buffer(4)]],
                                 uint3 group [[threadgroup_position_in_grid]],
                                 uint3 groups [[threadgroups_per_grid]],
                                 uint t [[thread_index_in_threadgroup]],
                                 uint lane [[thread_index_in_simdgroup]],
                                 uint simd_id [[simdgroup_index_in_threadgroup]]) {
    threadgroup uint simd_top[SIMDGROUPS];

    const uint row = group.x + group.y * groups.x;
    if (row >= params.rows) {
        // The whole threadgroup leaves together (extra groups of a folded grid).
        return;
    }
    const uint k = params.k;
    device const float* x_row = x + row * k;

    // 1. absmax over sign-cleared bit patterns.
    uint top = 0u;
    uint bad = STATUS_CLEAR;
    for (uint i = t; i < k; i += THREADS_PER_GROUP) {
        const uint bits = as_type<uint>(x_row[i]) & F32_ABS_MASK;
        if (is_non_finite_bits(bits)) {
            bad = min(bad, row * k + i);
        } else {
            top = max(top, bits);
        }
    }
    if (bad != STATUS_CLEAR) {
        atomic_fetch_min_explicit(&status[0], bad, memory_order_relaxed);
    }
    top = simd_max(top);
    if (lane == 0u) {
        simd_top[simd_id] = top;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint s = 0u; s < SIMDGROUPS; ++s) {
        top = max(top, simd_top[s]);
    }

    // 2. The row's scale; every thread derives the same inv.
    // Bits for exact_f32; both finite, and inv only becomes a float for quantize_act.
    const uint a = max(top, SCALE_EPS_BITS);
    const float inv = as_type<float>(exact_div(as_type<uint>(127.0f), a));
    if (t == 0u) {
        absmax[row] = as_type<float>(a);
    }

    // 3. Quantize and pack, one output word (4 values) per step.
    const uint words = ACT_WORDS_PER_WEIGHT_WORD * ternary_words_per_row(k);
    for (uint w = t; w < words; w += THREADS_PER_GROUP) {
        uint word = 0u;
        for (uint i = 0u; i < 4u; ++i) {
            const uint kk = 4u * w + i;
            if (kk < k) {
                // Zeroed as bits: a float select of a NaN may be folded away under fast-math.
                const uint b = as_type<uint>(x_row[kk]);
                const float finite = as_type<float>(is_non_finite_bits(b) ? 0u : b);
                word = word | pack_act_byte(quantize_act(finite, inv), i);
            }
        }
        packed[row * words + w] = word;
    }
}
