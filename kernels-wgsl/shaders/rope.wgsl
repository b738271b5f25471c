// Rotary position embedding, HF "rotate half" pairing, on x of shape [S, H, D] (row-major):
// for s < S, h < H, i < D/2, with angle = f32(positions[s - params.pos_shift]) · freqs[i] (the
// position converted exactly as Rust's `as f32`, float_common.wgsl):
//   y[s,h,i]       = x[s,h,i] · cos(angle) - x[s,h,i+D/2] · sin(angle)
//   y[s,h,i+D/2]   = x[s,h,i+D/2] · cos(angle) + x[s,h,i] · sin(angle)
//
// The host supplies freqs[i] = theta^(-2i/D) computed exactly as the CPU reference does, so the
// angle is one correctly rounded product on every backend. The angle is reduced by 2π
// (`reduce_two_pi`, to about one ulp of π for any angle) and sin / cos come from
// polynomials (`sin_cos`), not the shader builtins, so the accuracy (|error| <= ~2e-7 on each of
// cos and sin) is the same on every driver (rope_common.wgsl, prepended).
//
// One invocation per (s, h, i) pair. Chunking: the launch covers positions s_base .. s_base + S' of
// x and y (bound from row s_base); positions are bound whole (pos_shift = 0) or from row s_base too
// (pos_shift = s_base); freqs are bound whole. Flat indices reported are those of the full tensors.
//
// Non-finite status words: 0 = x, 1 = output (overflow of |x| near f32's maximum). Dispatch:
// linear, ceil(pairs / 256) workgroups.

struct Params {
    pairs: u32,     // S' · H · D/2 for this launch
    half_dim: u32,  // D/2
    heads: u32,     // H
    s_base: u32,    // first position row of this launch
    pos_shift: u32, // row of the full positions held by element 0 of the binding
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (q >= params.pairs) {
        return;
    }
    let half = params.half_dim;
    let i = q % half;
    let sh = q / half;              // s' · H + h, within this launch
    let s = params.s_base + sh / params.heads;
    let lo = sh * 2u * half + i;
    let hi = lo + half;
    let flat = params.s_base * params.heads * 2u * half;

    let x0 = x[lo];
    let x1 = x[hi];
    if (is_non_finite(x0)) {
        atomicMin(&nonfinite[0], flat + lo);
    }
    if (is_non_finite(x1)) {
        atomicMin(&nonfinite[0], flat + hi);
    }
    let r = rope_rotate(x0, x1, positions[s - params.pos_shift], freqs[i]);
    if (is_non_finite(r.x)) {
        atomicMin(&nonfinite[1], flat + lo);
    }
    if (is_non_finite(r.y)) {
        atomicMin(&nonfinite[1], flat + hi);
    }
    y[lo] = r.x;
    y[hi] = r.y;
}
