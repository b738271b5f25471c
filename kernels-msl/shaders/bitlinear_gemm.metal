// BitLinear GEMM on simdgroup matrices: y[M, N] = xq[M, K] · wq[N, K]^T rescaled, for M large
// enough to fill 32-row tiles (prefill). Inputs are the outputs of quantize_activations and
// quantize_weights.
//
// Exactness: int8 activations and ternary weights are exact in half, each product of two such
// halves is an integer of magnitude <= 128, exact in f32, and every partial sum of a dot product
// over K terms is an integer of magnitude <= 128 · K. For K <= MAX_K = 131071 that is < 2^24, so
// every f32 partial sum is exact, whatever order and blocking the hardware uses: the f16 x f16 ->
// f32 simdgroup_multiply_accumulate yields exactly the i32 accumulator of layout.rs.
//
// Tiling: a threadgroup of 4 simdgroups computes a 32 x 32 output tile; simdgroup s owns the
// 16 x 16 quadrant (s / 2, s % 2) as 2 x 2 simdgroup_float8x8 accumulators. Each K step of 32
// stages 32 x 32 activations (unpacked to half) and 32 x 32 weights (decoded to -1/0/+1 half,
// stored transposed [k][n] so the product is X · W^T) in threadgroup memory. Out-of-range rows
// and the odd last weight word read as zero activations / zero weights.
// The epilogue stores the accumulators to threadgroup memory and rescales per row:
// y = float(acc) · ((s · a_m) · INV_127), the scale products with exact_mul.
//
// Grid: (ceil(N / 32), ceil(M / 32), 1).
//
// Bindings:
//   buffer(0)  constant GemmParams&  params: the params (wgpu immediates)
//   buffer(1)  device const uint*  x_packed: [M, 4 · ceil(K / 16)] packed int8 activations
//   buffer(2)  device const float*  x_absmax: [M], the clamped absmax a_m of each row
//   buffer(3)  device const uint*  weights: [N, ceil(K / 16)] ternary words
//   buffer(4)  device const float*  weight_scale: [1] = s, the weights' scale
//   buffer(5)  device uint*  y: [M, N] f32 bits (or i32 accumulators, output_mode 1)
//   buffer(6)  device atomic_uint*  status: group 1 binding 1; word 0 = smallest flat index of a
//              non-finite y

struct GemmParams {
    // Activation rows M.
    uint m;
    // Weight rows N.
    uint n;
    // Inner dimension K (1 ..= MAX_K).
    uint k;
    // 0: y = rescaled f32 outputs; 1: y = the exact i32 accumulators' bits.
    uint output_mode;
};

// Threads per threadgroup (the descriptor's workgroup size): 4 simdgroups.
constexpr constant uint THREADS_PER_GROUP = 128u;
// Output tile edge (M and N).
constexpr constant uint TILE = 32u;
// K values per step: two weight words, eight activation words.
constexpr constant uint TILE_K = 32u;
// Largest K for which every f32 partial sum is an exact integer (128 · K < 2^24).
constexpr constant uint MAX_K = 131071u;
// params.output_mode value selecting raw accumulators.
constexpr constant uint OUTPUT_ACCUMULATORS = 1u;

kernel void bitlinear_gemm(constant GemmParams& params [[buffer(0)]],
                           device const uint* x_packed [[buffer(1)]],
                           device const float* x_absmax [[buffer(2)]],
                           device const uint* weights [[buffer(3)]],
                           device const float* weight_scale [[buffer(4)]],
                           device uint* y [[buffer(5)]],
                           device atomic_uint* status [[buffer(6)]],
                           uint3 group [[threadgroup_position_in_grid]],
                           uint t [[thread_index_in_threadgroup]],
                           uint simd_id [[simdgroup_index_in_threadgroup]]) {
    threadgroup half x_tile[TILE * TILE_K];
    threadgroup half w_tile[TILE_K * TILE];
    threadgroup float acc_tile[TILE * TILE];
    // Per-row scales as f32 bits (s · a_m may overflow to infinity).
    threadgroup uint row_scale[TILE];

    const uint m0 = group.y * TILE;
    const uint n0 = group.x * TILE;
    const uint wpr = ternary_words_per_row(params.k);
    const uint x_words = ACT_WORDS_PER_WEIGHT_WORD * wpr;
    const uint sm = (simd_id / 2u) * 16u;
    const uint sn = (simd_id % 2u) * 16u;

    simdgroup_float8x8 acc[2][2];
    for (uint i = 0u; i < 2u; ++i) {
        for (uint j = 0u; j < 2u; ++j) {
            acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
        }
    }

    for (uint kw = 0u; kw < wpr; kw += 2u) {
        // Stage activations: 32 rows x 8 packed words, unpacked to half.
        for (uint i = t; i < TILE * 8u; i += THREADS_PER_GROUP) {
            const uint r = i / 8u;
            const uint c = i % 8u;
            const uint row = m0 + r;
            const uint col = kw * ACT_WORDS_PER_WEIGHT_WORD + c;
            const uint word = (row < params.m && col < x_words) ? x_packed[row * x_words + col] : 0u;
            const char4 v = as_type<char4>(word);
            const uint at = r * TILE_K + c * 4u;
            x_tile[at] = half(v.x);
            x_tile[at + 1u] = half(v.y);
            x_tile[at + 2u] = half(v.z);
            x_tile[at + 3u] = half(v.w);
        }
        // Stage weights: 32 rows x 2 words; one thread decodes one word into 16 halves.
        if (t < TILE * 2u) {
            const uint r = t / 2u;
            const uint c = t % 2u;
            const uint row = n0 + r;
            const uint col = kw + c;
            const uint word = (row < params.n && col < wpr) ? weights[row * wpr + col] : ZERO_WEIGHT_WORD;
            for (uint kk = 0u; kk < WEIGHTS_PER_WORD; ++kk) {
                const int w = int((word >> code_shift(kk)) & 3u) - 1;
                w_tile[(c * WEIGHTS_PER_WORD + kk) * TILE + r] = half(w);
            }
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);

        for (uint kk = 0u; kk < TILE_K; kk += 8u) {
            simdgroup_half8x8 a0;
            simdgroup_half8x8 a1;
            simdgroup_half8x8 b0;
            simdgroup_half8x8 b1;
            simdgroup_load(a0, x_tile + sm * TILE_K + kk, TILE_K);
            simdgroup_load(a1, x_tile + (sm + 8u) * TILE_K + kk, TILE_K);
            simdgroup_load(b0, w_tile + kk * TILE + sn, TILE);
            simdgroup_load(b1, w_tile + kk * TILE + sn + 8u, TILE);
            simdgroup_multiply_accumulate(acc[0][0], a0, b0, acc[0][0]);
            simdgroup_multiply_accumulate(acc[0][1], a0, b1, acc[0][1]);
            simdgroup_multiply_accumulate(acc[1][0], a1, b0, acc[1][0]);
            simdgroup_multiply_accumulate(acc[1][1], a1, b1, acc[1][1]);
        }
        // The next step overwrites the tiles.
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }

    // Epilogue: accumulators to threadgroup memory, per-row scales, rescale and store.
    simdgroup_store(acc[0][0], acc_tile + sm * TILE + sn, TILE);
    simdgroup_store(acc[0][1], acc_tile + sm * TILE + sn + 8u, TILE);
    simdgroup_store(acc[1][0], acc_tile + (sm + 8u) * TILE + sn, TILE);
    simdgroup_store(acc[1][1], acc_tile + (sm + 8u) * TILE + sn + 8u, TILE);
    if (t < TILE) {
        const uint row = m0 + t;
        uint scale_bits = 0u;
        if (row < params.m) {
            const uint s_a = exact_mul(as_type<uint>(weight_scale[0]), as_type<uint>(x_absmax[row]));
            scale_bits = exact_mul(s_a, INV_127_BITS);
        }
        row_scale[t] = scale_bits;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    for (uint i = t; i < TILE * TILE; i += THREADS_PER_GROUP) {
        const uint r = i / TILE;
        const uint c = i % TILE;
        const uint row = m0 + r;
        const uint col = n0 + c;
        if (row < params.m && col < params.n) {
            const int total = int(acc_tile[i]);
            const uint out = row * params.n + col;
            if (params.output_mode == OUTPUT_ACCUMULATORS) {
                y[out] = uint(total);
            } else {
                // The product on bit patterns (the scale is positive; the sign is total's): under
                // fast math the compiler may assume a float multiply never overflows and fold the
                // non-finite test of its bits away (clang 19 does).
                const uint v = exact_mul(as_type<uint>(float(total)), row_scale[r])
                    | (total < 0 ? 0x80000000u : 0u);
                if (is_non_finite_bits(v)) {
                    atomic_fetch_min_explicit(&status[0], out, memory_order_relaxed);
                }
                // Stored as bits: y is a u32 buffer, so no float store can touch NaN payloads.
                y[out] = v;
            }
        }
    }
}
