// The fused GEMV (bitlinear_gemv_fused_subgroup.wgsl) over up to 3 weight matrices that share
// an input: a decode step's q, k and v projections, or gate and up. Their packed rows are
// concatenated into one weight buffer, so the row blocks, loads and quantization are the fused
// GEMV's own (bitlinear_gemv_fused_body.wgsl, same TPR / DEPTH); only the store differs. A block's
// matrix is the one holding its first row: the engine requires every matrix's row count to be a
// multiple of 4, so no 4-row block straddles two matrices. The block's outputs use that matrix's
// scale and go to that matrix's own output ([M, N_j] rows, from 0): one dispatch instead of one
// per matrix, the same bits as each matrix's own fused GEMV.
//
// Status words: 0 = the first non-finite x index (flat over [M, K]), 1 + j = the first
// non-finite y index of matrix j (flat over its [M, N_j] output). Only mode 0 (y) is supported.
// Needs bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl, bitlinear_gemv_fused_common.wgsl,
// bitlinear_gemv_fused_body.wgsl, act_quant_common.wgsl, exact_div.wgsl, exact_div_127.wgsl.

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// Words 0..2: each matrix's weight scale s (f32 bits); words 4..6: the end row of each matrix in
// the concatenated rows (matrices past the group's last one end at N). Words 3 and 7 unused.
@group(0) @binding(1) var<storage, read> gg_table: array<u32, 8>;
// The activation rows, [M, K] floats.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// Each matrix's output, [M, N_j] f32 bits (a smaller group binds a word of scratch for each
// unused slot; no row block routes there).
@group(0) @binding(3) var<storage, read_write> out0: array<u32>;
@group(0) @binding(4) var<storage, read_write> out1: array<u32>;
@group(0) @binding(5) var<storage, read_write> out2: array<u32>;

const X_STATUS: u32 = 0u;

// Writes word idx of matrix j's output (the formula and check of bitlinear_write.wgsl).
fn gg_write(j: u32, idx: u32, acc: i32, scale: f32) {
    let bits = bitcast<u32>(i32_to_f32(acc) * scale);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
        atomicMin(&nonfinite[1u + j], idx);
    }
    if (j == 0u) {
        out0[idx] = bits;
    } else if (j == 1u) {
        out1[idx] = bits;
    } else {
        out2[idx] = bits;
    }
}

// Stores a block's outputs into its matrix's output, with its matrix's scale.
fn gf_store(m: u32, n: u32, total: vec4<i32>, row_sum: i32, a: f32) {
    var j = 0u;
    var first = 0u;
    var end = gg_table[4];
    if (n >= gg_table[4]) {
        j = 1u;
        first = gg_table[4];
        end = gg_table[5];
    }
    if (n >= gg_table[5]) {
        j = 2u;
        first = gg_table[5];
        end = gg_table[6];
    }
    let scale = bitlinear_scale(bitcast<f32>(gg_table[j]), a);
    let base = m * (end - first) + (n - first);
    for (var r = 0u; r < 4u; r = r + 1u) {
        if (n + r < params.n) {
            gg_write(j, base + r, total[r] - row_sum, scale);
        }
    }
}
