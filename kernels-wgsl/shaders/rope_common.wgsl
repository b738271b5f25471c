// The rotation of RoPE's pairs (rope.wgsl, rope_pair.wgsl): the angle f32(position) · freq
// reduced modulo 2π exactly enough for any position, sin and cos by polynomials (the shader
// builtins' accuracy varies by driver), and the rotated pair.

// angle mod 2π into about [-π, π] for angle < 2^19 (`reduce_two_pi`): k = round(angle / 2π), then angle - k·2π with 2π split into four
// parts (Cody–Waite). The first three parts have 7 significant bits, so k·C_i is exact for k < 2^17
// and every partial difference is (nearly) exact without relying on a fused multiply-add (a driver
// may split `fma`); the fourth part carries the rest of 2π to 2e-14. Measured worst error for angles
// below 2^17·2π ≈ 8.2e5 (positions up to ~800k): 1.3e-7, about one ulp of π; beyond, it fails.
fn reduce_two_pi_small(angle: f32) -> f32 {
    let k = round(angle * 0.15915494309189535);
    var r = angle - k * 6.25;
    r = r - k * 0.03271484375;
    r = r - k * 0.000469207763671875;
    r = r - k * 1.2556658930407139e-06;
    return r;
}

// floor(2^192 / 2π): bits 1 .. 192 of 1/(2π), most significant word first.
const INV_TWO_PI_0: u32 = 0x28be60dbu;
const INV_TWO_PI_1: u32 = 0x9391054au;
const INV_TWO_PI_2: u32 = 0x7f09d5f4u;
const INV_TWO_PI_3: u32 = 0x7d4d3770u;
const INV_TWO_PI_4: u32 = 0x36d8a566u;
const INV_TWO_PI_5: u32 = 0x4f10e410u;

// Word j of floor(2^192 / 2π), counted from the least significant; 0 above the top word.
fn inv_two_pi_word(j: u32) -> u32 {
    switch j {
        case 0u: { return INV_TWO_PI_5; }
        case 1u: { return INV_TWO_PI_4; }
        case 2u: { return INV_TWO_PI_3; }
        case 3u: { return INV_TWO_PI_2; }
        case 4u: { return INV_TWO_PI_1; }
        case 5u: { return INV_TWO_PI_0; }
        default: { return 0u; }
    }
}

// Bits p .. p + 31 of floor(2^192 / 2π) (bit 0 the least significant).
fn inv_two_pi_bits(p: u32) -> u32 {
    let j = p / 32u;
    let b = p % 32u;
    // A shift by 32 is a shift by 0 in WGSL: the word above contributes nothing when b == 0.
    let above = select(inv_two_pi_word(j + 1u) << (32u - b), 0u, b == 0u);
    return (inv_two_pi_word(j) >> b) | above;
}

// The high 32 bits of the product of m < 2^24 and w, from 16-bit halves (no partial sum overflows).
fn mul_hi(m: u32, w: u32) -> u32 {
    let mh = m >> 16u;
    let ml = m & 0xffffu;
    let wh = w >> 16u;
    let wl = w & 0xffffu;
    let mid = ml * wh + ((ml * wl) >> 16u);
    let mid2 = mh * wl + (mid & 0xffffu);
    return mh * wh + (mid >> 16u) + (mid2 >> 16u);
}

// angle mod 2π into [-π, π] for a finite angle >= 2^19, in integer arithmetic (Payne–Hanek), so
// no driver's float optimizations can touch it. With angle = m · 2^e (m < 2^24, e in [-4, 104]),
// angle / 2π mod 1 = m · W / 2^64 mod 1, where W = floor(2^(64+e) / 2π) mod 2^64: the bits of 1/(2π)
// above W only add integers, the ones below it less than m · 2^-64 < 2^-40 of a turn. The top 32
// bits of m · W mod 2^64 are the turn as a 32-bit fraction (truncated: < 2^-32 of a turn, 1.5e-9
// rad), read as signed to centre it on 0, then scaled by 2π / 2^32 = K_HI + K_LO: K_HI = 6 · 2^-32
// has 2 significant bits and the fraction's high part 20, so the main product is exact and only the
// small terms and the final sum round (about half an ulp of the result).
fn reduce_two_pi_large(angle: f32) -> f32 {
    let bits = bitcast<u32>(angle);
    let m = (bits & 0x7fffffu) | 0x800000u;
    let e = i32(bits >> 23u) - 150;
    // W = floor(2^192 / 2π) >> (128 - e), mod 2^64.
    let s = u32(128 - e);
    let turn = i32(m * inv_two_pi_bits(s + 32u) + mul_hi(m, inv_two_pi_bits(s)));
    let t_hi = turn & i32(0xfffff000u);
    let hi = f32(t_hi);
    let lo = f32(turn - t_hi);
    return hi * 1.3969838619232178e-09 + (hi * 6.593421641998276e-11 + lo * 1.462918119976564e-09);
}

// angle mod 2π into about [-π, π] for any angle (positions are u32 and freqs may exceed 1, so
// angles reach 2^32 and beyond): the fast Cody–Waite form below 2^19, where it is exact, and the
// integer form above (a one-step Cody–Waite was off by 1e-3 at position 4e6). A non-finite angle
// (f32 overflow of position · freq) gives NaN, as cos and sin of it do on the CPU.
fn reduce_two_pi(angle: f32) -> f32 {
    if (is_non_finite(angle)) {
        return bitcast<f32>(0x7fc00000u);
    }
    if (angle < 524288.0) {
        return reduce_two_pi_small(angle);
    }
    return reduce_two_pi_large(angle);
}

// sin and cos of r ∈ [-π, π] (a little beyond is fine) without the shader's builtins, whose
// accuracy varies by driver: quadrant j = round(r / (π/2)), y = r - j·π/2 (three-part π/2; j·P_i
// is exact for |j| <= 2 and the first subtraction is exact by Sterbenz), then the Cephes sinf / cosf
// minimax polynomials on [-π/4, π/4]. Measured in f32 without fma: |error| <= 8e-8 for both.
fn sin_cos(r: f32) -> vec2<f32> {
    let j = round(r * 0.63661977236758134);
    var y = r - j * 1.5707963705062866;
    y = y - j * (-4.371138828673793e-08);
    y = y - j * (-1.7151245100058819e-15);
    let z = y * y;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * y + y;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
        - 0.5 * z + 1.0;
    // Rotate by the quadrant: (sin, cos) of y + j·π/2.
    switch ((i32(j) % 4 + 4) % 4) {
        case 0: { return vec2<f32>(s, c); }
        case 1: { return vec2<f32>(c, -s); }
        case 2: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

// The pair (x0, x1) = (x[i], x[i + D/2]) rotated by angle f32(pos) · freq:
// (x0·cos − x1·sin, x1·cos + x0·sin).
fn rope_rotate(x0: f32, x1: f32, pos: u32, freq: f32) -> vec2<f32> {
    let sc = sin_cos(reduce_two_pi(u32_to_f32(pos) * freq));
    return vec2<f32>(x0 * sc.y - x1 * sc.x, x1 * sc.y + x0 * sc.x);
}
