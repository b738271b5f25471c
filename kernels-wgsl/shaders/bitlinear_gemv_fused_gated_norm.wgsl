// The gated fused GEMV (bitlinear_gemv_fused_gated_subgroup.wgsl) on a normed input
// (bitlinear_gemv_fused_norm.wgsl): a decode step's residual add and RMSNorm with its gate and up
// projections and their activation in one dispatch. The norm's bindings follow the gated GEMV's.

// The residual added to x, [M, K] (4 floats of scratch without RESIDUAL).
@group(0) @binding(4) var<storage, read> res: array<vec4<f32>>;
// The norm's weight, [K].
@group(0) @binding(5) var<storage, read> nw: array<vec4<f32>>;
// h = x + res, [M, K] (4 floats of scratch without RESIDUAL).
@group(0) @binding(6) var<storage, read_write> h_out: array<f32>;
