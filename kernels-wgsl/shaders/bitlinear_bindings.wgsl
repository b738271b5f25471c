// Shared snippet: the buffers of the BitLinear kernels that read quantized activations with
// scalar (u32) loads — the generic GEMV variants — and their per-(m, n) store.
//
// Needs bitlinear_common.wgsl.

@group(0) @binding(0) var<storage, read> weights: array<u32>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
@group(0) @binding(2) var<storage, read> act: array<u32>;
// Per activation row: the clamped absmax a_m.
@group(0) @binding(3) var<storage, read> act_absmax: array<f32>;
// [M, out_stride] row-major: f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// Status word 0: the smallest flat index (into `out`) of a non-finite y.
const Y_STATUS: u32 = 0u;

// Writes output (m, n) of this dispatch from its exact accumulator.
fn bitlinear_store(m: u32, n: u32, acc: i32) {
    let idx = m * params.out_stride + params.out_base + n;
    bitlinear_write(idx, acc, bitlinear_scale(weight_scale[0], act_absmax[params.m_base + m]));
}
