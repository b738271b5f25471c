// Shared snippet: IEEE correctly rounded f32 division (round to nearest, ties to even).
//
// layout.rs requires the one division per quantization scale (`sum / count`, `1 / s`, `127 / a`) to
// be correctly rounded, so every backend derives bit-identical scales. WGSL `/` is only accurate to
// 2.5 ulp on Vulkan, so this routine divides the significands with u32 shift-subtract long division
// and rounds with the remainder. It only reads and writes bit patterns, so it is also immune to
// fast-math, flush-to-zero and denormals-are-zero modes of the float unit.
//
// Domain: non-negative operands (the sign bit is ignored). Handles zero, subnormal, normal and
// infinite operands and subnormal / overflowing results; NaN in gives NaN out.
//
// Include mechanism: this file is text-prepended to the kernels that call `exact_div` (see
// `kernels-wgsl/src/bitnet.rs`); WGSL module-scope declarations are order independent.

// A positive finite f32 as `sig * 2^(exp - 23)` with bit 23 of `sig` set.
struct ExactDivParts {
    sig: u32,
    exp: i32,
}

// Splits the bits of a positive finite f32 (normal or subnormal, not zero) into `ExactDivParts`.
fn exact_div_split(bits: u32) -> ExactDivParts {
    let biased = i32(bits >> 23u);
    let frac = bits & 0x7fffffu;
    if (biased == 0) {
        // Subnormal: value = frac * 2^-149. Normalize so that bit 23 is set.
        let shift = countLeadingZeros(frac) - 8u;
        return ExactDivParts(frac << shift, -126 - i32(shift));
    }
    return ExactDivParts(frac | 0x800000u, biased - 127);
}

// `a / b`, correctly rounded, for non-negative `a` and `b`.
fn exact_div(a: f32, b: f32) -> f32 {
    let ab = bitcast<u32>(a) & 0x7fffffffu;
    let bb = bitcast<u32>(b) & 0x7fffffffu;
    let inf = 0x7f800000u;
    // Special operands, in IEEE order: NaN, inf/inf, 0/0, x/inf, x/0, inf/x, 0/x.
    if (ab > inf || bb > inf || (ab == inf && bb == inf) || (ab == 0u && bb == 0u)) {
        return bitcast<f32>(0x7fc00000u);
    }
    if (bb == inf) {
        return 0.0;
    }
    if (bb == 0u || ab == inf) {
        return bitcast<f32>(inf);
    }
    if (ab == 0u) {
        return 0.0;
    }

    let x = exact_div_split(ab);
    let y = exact_div_split(bb);
    // Align so that the significand quotient Q = rem / y.sig lies in [1, 2); result = Q * 2^e.
    var rem = x.sig;
    var e = x.exp - y.exp;
    if (rem < y.sig) {
        rem = rem << 1u;
        e = e - 1;
    }
    let biased = e + 127;
    if (biased >= 255) {
        return bitcast<f32>(inf);
    }
    // Quotient bits to produce, including one round bit: 24 significand bits for a normal result,
    // fewer for a subnormal one (its significand is shifted right by 1 - biased).
    var nbits = 25;
    if (biased < 1) {
        nbits = 24 + biased;
    }
    if (nbits < 1) {
        // Q * 2^e < 2^-150: below half the smallest subnormal, rounds to zero.
        return 0.0;
    }

    // Shift-subtract long division; rem stays below 2 * y.sig < 2^25, so u32 never overflows.
    var q = 0u;
    for (var i = 0; i < nbits; i = i + 1) {
        q = q << 1u;
        if (rem >= y.sig) {
            rem = rem - y.sig;
            q = q | 1u;
        }
        rem = rem << 1u;
    }
    // Round half to even: the last bit is the round bit, a non-zero remainder is the sticky bit.
    let round_bit = q & 1u;
    q = q >> 1u;
    if (round_bit == 1u && (rem != 0u || (q & 1u) == 1u)) {
        q = q + 1u;
    }
    if (biased < 1) {
        // Subnormal result; a carry into bit 23 correctly yields the smallest normal number.
        return bitcast<f32>(q);
    }
    // q holds the implicit bit (2^23), which adds one to the exponent field; a rounding carry to
    // 2^24 bumps the exponent again (up to infinity, as IEEE requires).
    return bitcast<f32>((u32(biased - 1) << 23u) + q);
}

// Signed, correctly rounded division on top of `exact_div` (prepended from exact_div.wgsl, which
// handles magnitudes): WGSL `/` is only accurate to 2.5 ulp, the CPU reference divides exactly.
fn div_rounded(x: f32, y: f32) -> f32 {
    let sign = (bitcast<u32>(x) ^ bitcast<u32>(y)) & 0x80000000u;
    return bitcast<f32>(bitcast<u32>(exact_div(x, y)) | sign);
}
