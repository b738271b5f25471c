// The fused GEMV (bitlinear_gemv_fused_subgroup.wgsl) over a feed-forward block's gate and up
// matrices with the gated activation in its store: out = act(gate · x) · (up · x), [M, N]. The
// engine interleaves the two matrices' packed rows two by two (gate rows 2i, 2i + 1, then up
// rows 2i, 2i + 1: one 4-row block), so one block's lanes hold both projections of output rows
// 2i and 2i + 1, and the store computes each y as the grouped GEMV stores it (f32(acc) times that
// matrix's scale), then act(gate) · up as elementwise_gated.wgsl does (activation_common.wgsl's
// code, one f32 multiply): one dispatch where the grouped GEMV and the gated op took two, the
// same bits.
//
// Status words, as the two launches would flag them: 0 = the first non-finite x index (flat over
// [M, K]), 1 = gate's and 2 = up's first non-finite y index (flat over [M, N], as the grouped
// GEMV reports each matrix's output), 3 = the first non-finite output of the gated op (flat over
// [M, N]) where both projections are finite. Only mode 0 (y) is supported.
// Needs exact_div.wgsl, exact_div_127.wgsl, float_common.wgsl, activation_common.wgsl,
// bitlinear_common.wgsl, bitlinear_gemv_blocks.wgsl, act_quant_common.wgsl,
// bitlinear_gemv_fused_common.wgsl and bitlinear_gemv_fused_body.wgsl.

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// Word 0: gate's weight scale, word 1: up's (f32 bits).
@group(0) @binding(1) var<storage, read> gt_scales: array<u32, 2>;
// The activation rows, [M, K] floats.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// act(gate) · up, [M, N] f32 bits.
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const X_STATUS: u32 = 0u;
// The activation (override constant): the codes of activation_common.wgsl.
override ACT: u32 = 1u;

// Stores a block's two outputs: rows n / 2 and n / 2 + 1 of [M, N] from gate (total 0, 1) and up
// (total 2, 3).
fn gf_store(m: u32, n: u32, total: vec4<i32>, row_sum: i32, a: f32) {
    let sg = bitlinear_scale(bitcast<f32>(gt_scales[0]), a);
    let su = bitlinear_scale(bitcast<f32>(gt_scales[1]), a);
    let n_out = params.n / 2u;
    let row = n / 2u;
    for (var r = 0u; r < 2u; r = r + 1u) {
        if (row + r < n_out) {
            let idx = m * n_out + row + r;
            // Pinned: rounded here, as the grouped GEMV rounds the y it stores, whatever the
            // driver would contract into the activation.
            let g = bitlinear_pin(i32_to_f32(total[r] - row_sum) * sg);
            let u = bitlinear_pin(i32_to_f32(total[2u + r] - row_sum) * su);
            let g_bad = is_non_finite(g);
            let u_bad = is_non_finite(u);
            if (g_bad) {
                atomicMin(&nonfinite[1], idx);
            }
            if (u_bad) {
                atomicMin(&nonfinite[2], idx);
            }
            let y = activation(ACT, g) * u;
            if (!g_bad && !u_bad && is_non_finite(y)) {
                atomicMin(&nonfinite[3], idx);
            }
            out[idx] = bitcast<u32>(y);
        }
    }
}
