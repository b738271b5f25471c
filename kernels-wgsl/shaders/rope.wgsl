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
// One invocation per (s, h, i) pair. Non-finite x raises status bit 1 (positions are integers and
// freqs are checked on the host). Dispatch: ceil(S·H·D/2 / 256) workgroups spread over x and y.

struct Params {
    pairs: u32,     // S · H · D/2
    half_dim: u32,  // D/2
    heads: u32,     // H
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> freqs: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> status: atomic<u32>;

fn is_finite(v: f32) -> bool {
    // Exponent all ones means inf or NaN; tested on bits so no fast-math can fold it away.
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
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
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let q = gid.x + gid.y * nwg.x * 256u;
    if (q >= p.pairs) {
        return;
    }
    let i = q % p.half_dim;
    let sh = q / p.half_dim;        // s · H + h
    let s = sh / p.heads;
    let lo = sh * 2u * p.half_dim + i;
    let hi = lo + p.half_dim;

    let angle = reduce_two_pi(f32(positions[s]) * freqs[i]);
    let c = cos(angle);
    let sn = sin(angle);
    let x0 = x[lo];
    let x1 = x[hi];
    if (!is_finite(x0) || !is_finite(x1)) {
        atomicOr(&status, 1u);
    }
    y[lo] = x0 * c - x1 * sn;
    y[hi] = x1 * c + x0 * sn;
}
