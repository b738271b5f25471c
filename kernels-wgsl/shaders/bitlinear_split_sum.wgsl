// The epilogue of a split-K BitLinear GEMM: sums the K slices' exact accumulators and rescales.
//
// A GEMM split over K (`k_splits` = S slices, bitlinear_gemm*.wgsl) writes each slice's exact i32
// accumulators to its own [M, N] plane of `partials`; this kernel adds the S planes of each
// output (in i32: every partial sum and the total fit, |acc| <= 127 K) and writes y (mode 0,
// through the exact epilogue of bitlinear_common.wgsl: the same bits as an unsplit GEMM) or the
// accumulator (mode 1). One output per thread; the grid is linear (folded into 2D by the engine).
//
// Params (bitlinear_common.wgsl): m = rows of this dispatch, n = out_stride = N, out_base = 0,
// m_base = the first row's index in act_absmax, k_splits = S. Status word 0: the first
// non-finite y index. Needs bitlinear_common.wgsl.

// The weight tensor's scale s.
@group(0) @binding(0) var<storage, read> weight_scale: array<f32>;
// Per activation row: the clamped absmax a_m.
@group(0) @binding(1) var<storage, read> act_absmax: array<f32>;
// [S, M, N] i32 bits: the slices' accumulators.
@group(0) @binding(2) var<storage, read> partials: array<u32>;
// [M, N]: f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const Y_STATUS: u32 = 0u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let plane = params.m * params.out_stride;
    let i = (wid.x + wid.y * nwg.x) * 256u + t;
    if (i >= plane) {
        return;
    }
    var acc = 0i;
    for (var z = 0u; z < params.k_splits; z = z + 1u) {
        acc += bitcast<i32>(partials[z * plane + i]);
    }
    let row = i / params.out_stride;
    bitlinear_write(i, acc, bitlinear_scale(weight_scale[0], act_absmax[params.m_base + row]));
}
