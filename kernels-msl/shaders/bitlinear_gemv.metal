// Fused activation quantization + BitLinear GEMV: y[m, n] = Σ_k xq[m, k] · wq[n, k] rescaled,
// for small M (decode). One threadgroup = one activation row m and 32 weight rows.
//
//   1. absmax of row m (sign-cleared bit patterns, simd_max + a max over 8 simdgroups; NaN/inf
//      are left out and flagged), a = max(absmax, 1e-5), inv = exact_div(127, a);
//   2. quantize the row into threadgroup memory (packed as in layout.rs; a NaN/inf is quantized as
//      0) and reduce its sum Σ xq with simd_sum;
//   3. each simdgroup owns 4 weight rows; lane l walks words j = l, l + 32, ... of those rows
//      (coalesced), accumulating Σ x · code with dot16_codes; simd_sum reduces the lanes, and
//      acc = that − Σ xq (codes are w + 1). All integer: exact in any order.
//   4. y = float(acc) · ((s · a) · INV_127), the two scale products with exact_mul so fast math
//      cannot reassociate them with the final multiply; or, in accumulator mode, acc's i32 bits.
//
// Every threadgroup re-quantizes its activation row: K reads from cache, negligible next to the
// 32 · K / 4 bytes of weights it streams. K is limited by the threadgroup array (MAX_K).
//
// Grid: (ceil(N / 32), M, 1).
//
// Bindings:
//   buffer(0)  constant GemvParams&  params: the params (wgpu immediates)
//   buffer(1)  device const float*  x: [M, K] row-major f32 activations
//   buffer(2)  device const uint*  weights: [N, ceil(K / 16)] ternary words
//   buffer(3)  device const float*  weight_scale: [1] = s, the weights' scale
//   buffer(4)  device uint*  y: [M, N] f32 bits (or i32 accumulators, output_mode 1)
//   buffer(5)  device atomic_uint*  status: group 1 binding 1; word 0 = smallest flat index of a
//              NaN/inf in x, word 1 = smallest flat index of a non-finite y

struct GemvParams {
    // Activation rows M.
    uint m;
    // Weight rows N (outputs per activation row).
    uint n;
    // Inner dimension K (1 ..= MAX_K).
    uint k;
    // 0: y = rescaled f32 outputs; 1: y = the exact i32 accumulators' bits.
    uint output_mode;
};

// Threads per threadgroup (the descriptor's workgroup size).
constexpr constant uint THREADS_PER_GROUP = 256u;
// Simdgroups per threadgroup (32 lanes each).
constexpr constant uint SIMDGROUPS = 8u;
// Weight rows per simdgroup.
constexpr constant uint ROWS_PER_SIMDGROUP = 4u;
// Weight rows per threadgroup.
constexpr constant uint ROWS_PER_GROUP = 32u;
// Largest K: the quantized row lives in threadgroup memory (MAX_K bytes = 16 KiB).
constexpr constant uint MAX_K = 16384u;
// params.output_mode value selecting raw accumulators.
constexpr constant uint OUTPUT_ACCUMULATORS = 1u;

kernel void bitlinear_gemv(constant GemvParams& params [[buffer(0)]],
                           device const float* x [[buffer(1)]],
                           device const uint* weights [[buffer(2)]],
                           device const float* weight_scale [[buffer(3)]],
                           device uint* y [[buffer(4)]],
                           device atomic_uint* status [[buffer(5)]],
                           uint3 group [[threadgroup_position_in_grid]],
                           uint t [[thread_index_in_threadgroup]],
                           uint lane [[thread_index_in_simdgroup]],
                           uint simd_id [[simdgroup_index_in_threadgroup]]) {
    threadgroup uint xq[MAX_K / 4u];
    threadgroup uint simd_top[SIMDGROUPS];
    threadgroup int simd_sum_xq[SIMDGROUPS];

    const uint m = group.y;
    const uint k = params.k;
    device const float* x_row = x + m * k;

    // 1. absmax over sign-cleared bit patterns.
    uint top = 0u;
    uint bad = STATUS_CLEAR;
    for (uint i = t; i < k; i += THREADS_PER_GROUP) {
        const uint bits = as_type<uint>(x_row[i]) & F32_ABS_MASK;
        if (is_non_finite_bits(bits)) {
            bad = min(bad, m * k + i);
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
    // a and inv as bits for exact_f32 (both finite: inv only becomes a float for quantize_act).
    const uint a = max(top, SCALE_EPS_BITS);
    const float inv = as_type<float>(exact_div(as_type<uint>(127.0f), a));

    // 2. Quantize + pack into threadgroup memory; sum of the quantized values.
    const uint wpr = ternary_words_per_row(k);
    const uint words = ACT_WORDS_PER_WEIGHT_WORD * wpr;
    int q_sum = 0;
    for (uint w = t; w < words; w += THREADS_PER_GROUP) {
        uint word = 0u;
        for (uint i = 0u; i < 4u; ++i) {
            const uint kk = 4u * w + i;
            if (kk < k) {
                // Zeroed as bits: a float select of a NaN may be folded away under fast-math.
                const uint b = as_type<uint>(x_row[kk]);
                const int q = quantize_act(as_type<float>(is_non_finite_bits(b) ? 0u : b), inv);
                q_sum += q;
                word = word | pack_act_byte(q, i);
            }
        }
        xq[w] = word;
    }
    q_sum = simd_sum(q_sum);
    if (lane == 0u) {
        simd_sum_xq[simd_id] = q_sum;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    int x_sum = 0;
    for (uint s = 0u; s < SIMDGROUPS; ++s) {
        x_sum += simd_sum_xq[s];
    }

    // 3. Four weight rows per simdgroup; rows past N re-read row N - 1 (uniform control flow for
    //    simd_sum) and are not stored.
    const uint row0 = group.x * ROWS_PER_GROUP + simd_id * ROWS_PER_SIMDGROUP;
    const uint last_row = params.n - 1u;
    int acc[ROWS_PER_SIMDGROUP] = {0, 0, 0, 0};
    for (uint j = lane; j < wpr; j += 32u) {
        const uint x0 = xq[4u * j];
        const uint x1 = xq[4u * j + 1u];
        const uint x2 = xq[4u * j + 2u];
        const uint x3 = xq[4u * j + 3u];
        for (uint r = 0u; r < ROWS_PER_SIMDGROUP; ++r) {
            const uint row = min(row0 + r, last_row);
            acc[r] += dot16_codes(x0, x1, x2, x3, weights[row * wpr + j]);
        }
    }

    // 4. Reduce, rescale, store.
    // Bits: s · a may overflow to infinity.
    const uint row_scale = exact_mul(exact_mul(as_type<uint>(weight_scale[0]), a), INV_127_BITS);
    for (uint r = 0u; r < ROWS_PER_SIMDGROUP; ++r) {
        const int total = simd_sum(acc[r]) - x_sum;
        const uint row = row0 + r;
        if (lane == 0u && row < params.n) {
            const uint out = m * params.n + row;
            if (params.output_mode == OUTPUT_ACCUMULATORS) {
                y[out] = uint(total);
            } else {
                // The product on bit patterns (the scale is positive; the sign is total's): under
                // fast math the compiler may assume a float multiply never overflows and fold the
                // non-finite test of its bits away (clang 19 does).
                const uint v = exact_mul(as_type<uint>(float(total)), row_scale)
                    | (total < 0 ? 0x80000000u : 0u);
                if (is_non_finite_bits(v)) {
                    atomic_fetch_min_explicit(&status[1], out, memory_order_relaxed);
                }
                // Stored as bits: y is a u32 buffer, so no float store can touch NaN payloads.
                y[out] = v;
            }
        }
    }
}
