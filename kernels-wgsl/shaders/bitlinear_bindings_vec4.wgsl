// Shared snippet: the buffers of the vec4 BitLinear GEMVs on quantized activations (vec4, staged
// and lean-q): weights and activations both read as vec4 (four weight words; the four activation
// words that pair with one weight word).
//
// Needs bitlinear_common.wgsl.

@group(0) @binding(0) var<storage, read> weights: array<vec4<u32>>;
// The weight tensor's scale s.
@group(0) @binding(1) var<storage, read> weight_scale: array<f32>;
// [M, words_per_row] vec4: the packed activation rows (4 * words_per_row words each).
@group(0) @binding(2) var<storage, read> act: array<vec4<u32>>;
// Per activation row: the clamped absmax a_m.
@group(0) @binding(3) var<storage, read> act_absmax: array<f32>;
// [M, out_stride] row-major: f32 bits of y, or i32 bits of acc (see `mode`).
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// Status word 0: the smallest flat index (into `out`) of a non-finite y.
const Y_STATUS: u32 = 0u;
