// What the float matmul kernels share (matmul_tiled.wgsl, matmul_gemv_*.wgsl): the params, the
// status words, the guarded loads of A and B with their checks, the checked store of C, and the pin against
// fused multiply-add. The element-type file (matmul_f32.wgsl or matmul_f16.wgsl) declares the
// bindings a, b, c and the accessors load_a, load_b, store_c and c_non_finite; float_common.wgsl
// declares is_non_finite.
//
// Both kernels sum every output the same way, cpu-ref's order, so every tile gives cpu-ref's bits:
// k in chunks of MM_CHUNK, each chunk's products (each rounded, then added, k ascending) summed
// from 0, then the chunks' sums added in order to 0. A tile only decides how many outputs a
// workgroup makes and how many invocations share one output's chunks.
//
// Chunking: a launch computes rows row_base .. row_base + m of C. A and C are each bound whole or
// from the chunk's first row; a_shift / c_shift (0 when bound from the chunk, row_base when bound
// whole) turn a chunk row into a row of the binding. B is always bound whole. Indices reported for
// non-finite values are flat indices in the full tensors.
//
// Non-finite status words: 0 = a, 1 = b (checked as tiles are loaded), 2 = output (overflow of
// finite inputs).

// k per chunk of the summation order: bitnet_cpu_ref::ops::MATMUL_CHUNK.
const MM_CHUNK: u32 = 64u;

struct Params {
    m: u32,         // rows of this chunk
    n: u32,
    k: u32,
    b_trans: u32,   // 1 when B is stored [N,K], 0 when stored [K,N]
    row_base: u32,  // first row of this chunk in the full A and C
    a_shift: u32,   // row of A's binding holding chunk row 0
    c_shift: u32,   // row of C's binding holding chunk row 0
    zero: u32,      // always 0: the runtime zero of mm_pin4
}

@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

// The loads and their checks are apart: a kernel loads its whole share of a tile into registers
// first (mm_a_at, mm_b_at), then checks each value (mm_check_a, mm_check_b) as it stores it into
// workgroup memory. A status word's atomic between two loads kept the second load waiting for the
// first (NVIDIA's compiler does not move a load past an atomic), so a tile's loads ran one by one.

// A[gm, gk] (gm a row of this chunk), 0 outside the matrix.
fn mm_a_at(gm: u32, gk: u32) -> f32 {
    if (gm < params.m && gk < params.k) {
        return load_a((params.a_shift + gm) * params.k + gk);
    }
    return 0.0;
}

// Reports v = A[gm, gk] if it is not finite (0, for a position outside the matrix, never is).
fn mm_check_a(gm: u32, gk: u32, v: f32) {
    if (is_non_finite(v)) {
        atomicMin(&nonfinite[0], (params.row_base + gm) * params.k + gk);
    }
}

// Element e of a B tile of `tk` k x `cols` columns, as (k, column) within the tile: consecutive
// elements walk B's contiguous axis (columns when B is [K,N], k when it is [N,K]), so a
// workgroup's consecutive invocations load consecutive addresses.
fn mm_b_tile_at(e: u32, tk: u32, cols: u32) -> vec2<u32> {
    if (params.b_trans == 1u) {
        return vec2<u32>(e % tk, e / tk);
    }
    return vec2<u32>(e / cols, e % cols);
}

// B's flat index of the product's right operand B[gk, gn] (B stored [K,N] or, b_trans, [N,K]).
fn mm_b_index(gk: u32, gn: u32) -> u32 {
    return select(gk * params.n + gn, gn * params.k + gk, params.b_trans == 1u);
}

// B[gk, gn], 0 outside the matrix.
fn mm_b_at(gk: u32, gn: u32) -> f32 {
    if (gk < params.k && gn < params.n) {
        return load_b(mm_b_index(gk, gn));
    }
    return 0.0;
}

// Reports v = B[gk, gn] if it is not finite (0, outside the matrix, never is).
fn mm_check_b(gk: u32, gn: u32, v: f32) {
    if (is_non_finite(v)) {
        atomicMin(&nonfinite[1], mm_b_index(gk, gn));
    }
}

// C[gm, gn] = v (gm a row of this chunk, gn < n), reporting an output that overflowed.
fn mm_store_c(gm: u32, gn: u32, v: f32) {
    if (c_non_finite(v)) {
        atomicMin(&nonfinite[2], (params.row_base + gm) * params.n + gn);
    }
    store_c((params.c_shift + gm) * params.n + gn, v);
}

// An optimization barrier for four floats (XOR with the runtime zero params.zero): each product
// is rounded where it is computed, as the CPU reference rounds it, before the sum. Vulkan lets a
// driver contract a * b + c into an fma, and NVIDIA's did exactly that to the same pattern in the
// RMSNorm kernels (norm_rms_common.wgsl).
fn mm_pin4(v: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ vec4<u32>(params.zero));
}
