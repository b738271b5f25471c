// Rotary position embedding, HF "rotate half" pairing, on x of shape [S, H, D] (row-major):
// for s < S, h < H, i < D/2, with angle = f32(positions[s]) · freqs[i]:
//   y[s,h,i]       = x[s,h,i] · cos(angle) - x[s,h,i+D/2] · sin(angle)
//   y[s,h,i+D/2]   = x[s,h,i+D/2] · cos(angle) + x[s,h,i] · sin(angle)
//
// The host supplies freqs[i] = theta^(-2i/D) computed exactly as the CPU reference does, so the
// angle is one correctly rounded product on every backend. Shader sin/cos are only accurate on
// [-π, π], so the angle is first reduced by 2π with a three-part Cody–Waite constant (C1 has 8
// significant bits, so k·C1 is exact for k < 2^16, i.e. angles below ~4e5).
//
// One invocation per (s, h, i) pair. Chunking: the launch covers positions s_base .. s_base + S' of
// x and y (bound from row s_base); positions and freqs are bound whole. Flat indices reported are
// those of the full tensors.
//
// Non-finite status words: 0 = x, 1 = output (overflow of |x| near f32's maximum). Dispatch:
// linear, ceil(pairs / 256) workgroups.

struct Params {
    pairs: u32,     // S' · H · D/2 for this launch
    half_dim: u32,  // D/2
    heads: u32,     // H
    s_base: u32,    // first position row of this launch
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> freqs: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

// angle mod 2π into [-π, π].
fn reduce_two_pi(angle: f32) -> f32 {
    let k = round(angle * 0.15915494309189535);
    var r = fma(-k, 6.28125, angle);
    r = fma(-k, 1.9353071693331003e-03, r);
    r = fma(-k, 1.0253132e-11, r);
    return r;
}

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

    let angle = reduce_two_pi(f32(positions[s]) * freqs[i]);
    let c = cos(angle);
    let sn = sin(angle);
    let x0 = x[lo];
    let x1 = x[hi];
    if (is_non_finite(x0)) {
        atomicMin(&nonfinite[0], flat + lo);
    }
    if (is_non_finite(x1)) {
        atomicMin(&nonfinite[0], flat + hi);
    }
    let y0 = x0 * c - x1 * sn;
    let y1 = x1 * c + x0 * sn;
    if (is_non_finite(y0)) {
        atomicMin(&nonfinite[1], flat + lo);
    }
    if (is_non_finite(y1)) {
        atomicMin(&nonfinite[1], flat + hi);
    }
    y[lo] = y0;
    y[hi] = y1;
}
