// BitLinear GEMV for f32 activation rows (decode: M = 1, or M <= 8 requests batched) with the
// activation quantization fused in; K % 64 == 0 and K <= GF_MAX_K. Subgroup reductions.
//
// The grid's x index is the activation row (y and z number the row blocks): each workgroup
// quantizes one row and runs its row blocks against it, exactly as for M = 1. The M workgroups
// of a row block are adjacent in dispatch order, so they read the same weights at about the same
// time (one DRAM read, L2 hits for the rest): M rows cost one weight stream and M times the
// (parallel) per-workgroup work, where a kernel that applied each weight load to all M rows had
// every workgroup quantize all M rows.
//
// Every workgroup quantizes the (small, cache-resident) row itself, exactly as act_quant.wgsl
// does — absmax of the sign-cleared bits, a = max(absmax, 1e-5), inv = 127 / a correctly
// rounded (exact_div_127: 1.347 vs 1.424 ms for the H200 decode stack against the 25-step
// exact_div), xq = clamp(round(x * inv), -128, 127) — into workgroup memory, then runs the row
// blocks of bitlinear_gemv_blocks.wgsl against it. So BitLinear on f32 activations is one
// dispatch instead of two, and the quantized row never goes through memory. The first DEPTH
// steps of weight loads are issued before the quantization, so they are in flight while it
// runs. The activation row sum (for the code-domain trick of bitlinear_common.wgsl) falls out of
// the quantization.
//
// Status words: 0 = the first non-finite x index (flat over [M, K]; cpu-ref checks x first),
// 1 = the first non-finite y index (flat over [M, out_stride]); the engine binds all M rows in one
// dispatch. The body is bitlinear_gemv_fused_body.wgsl (shared with the grouped variant,
// bitlinear_gemv_fused_group_subgroup.wgsl); this file binds one weight matrix and one output.
// Needs bitlinear_common.wgsl, bitlinear_write.wgsl, bitlinear_gemv_blocks.wgsl,
// bitlinear_gemv_fused_common.wgsl, bitlinear_gemv_fused_body.wgsl, act_quant_common.wgsl,
// exact_div.wgsl, exact_div_127.wgsl.

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// The activation rows, [M, K] floats.
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// [out_stride] f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const X_STATUS: u32 = 0u;
const Y_STATUS: u32 = 1u;

// Stores a block's outputs: y = f32(acc) * ((s * a) * INV_127) for its rows inside the dispatch.
fn gf_store(m: u32, n: u32, total: vec4<i32>, row_sum: i32, a: f32) {
    let scale = bitlinear_scale(weight_scale[0], a);
    let base = m * params.out_stride + params.out_base + n;
    for (var r = 0u; r < 4u; r = r + 1u) {
        if (n + r < params.n) {
            bitlinear_write(base + r, total[r] - row_sum, scale);
        }
    }
}
