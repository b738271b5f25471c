// Shared snippet: 127 / a correctly rounded (round to nearest, ties to even) with a short
// dependency chain — the activation scale inv of the quantizers, which sits on their critical
// path. Bit-identical to exact_div(127.0, a) (exact_div.wgsl, which must be prepended too) for
// every a: the fast path covers positive normal a with biased exponent 6..=254 (so the result is
// a normal float), everything else (zero, subnormal, tiny, inf, NaN) calls exact_div.
//
// With A the 24-bit significand of a and N' = 127's significand (0xfe0000), doubled when it is
// below A, the 25-bit quotient q = floor(N' * 2^24 / A) (24 result bits and a round bit) and its
// remainder R = N' * 2^24 - q * A in [0, A) are found without exact_div's 25-step long division:
// 1. q0 = trunc(f32(N') / f32(A) * 2^24): the f32 division is within a few ulp (Vulkan allows
//    2.5), so q0 is within a few units of q;
// 2. R0 = N' * 2^24 - q0 * A computed with wrapping u32 arithmetic: the true value is below
//    2^31 in magnitude, so the i32 reading of the wrapped result is exact;
// 3. d = floor(f32(R0) / f32(A)) is floor(R0 / A) or one off (|R0 / A| < 16, relative error a
//    few 2^-24), so q0 + d, then one conditional step each way, gives q and R exactly.
// Then round half to even on the round bit, with R != 0 as the sticky bit (exactly exact_div's
// rounding).

fn exact_div_127(a: f32) -> f32 {
    let bits = bitcast<u32>(a);
    let ea = bits >> 23u;
    if (ea < 6u || ea > 254u) {
        return exact_div(127.0, a);
    }
    let sig = (bits & 0x7fffffu) | 0x800000u;
    // 127 = 0xfe0000 * 2^-17; the quotient's significand lies in [1, 2) once N' >= A.
    var num = 0xfe0000u;
    var biased = 260u - ea;
    if (num < sig) {
        num = num << 1u;
        biased = biased - 1u;
    }
    // 1. Estimate (num and sig are exact in f32; scaling by 2^24 is exact).
    var q = u32(f32(num) / f32(sig) * 16777216.0);
    // 2. Exact remainder of the estimate, through wrapping arithmetic.
    var r = bitcast<i32>((num << 24u) - q * sig);
    // 3. Correct the estimate: the float step, then one integer step each way.
    let d = i32(floor(f32(r) / f32(sig)));
    q = bitcast<u32>(bitcast<i32>(q) + d);
    r = r - d * bitcast<i32>(sig);
    if (r < 0) {
        q = q - 1u;
        r = r + bitcast<i32>(sig);
    }
    if (r >= bitcast<i32>(sig)) {
        q = q + 1u;
        r = r - bitcast<i32>(sig);
    }
    // Round half to even: the last bit is the round bit, a non-zero remainder the sticky bit.
    let round_bit = q & 1u;
    q = q >> 1u;
    if (round_bit == 1u && (r != 0 || (q & 1u) == 1u)) {
        q = q + 1u;
    }
    // q holds the implicit bit (2^23), which adds one to the exponent field; a rounding carry to
    // 2^24 bumps the exponent again (biased <= 254, so at most to 255 = infinity, as IEEE wants).
    return bitcast<f32>(((biased - 1u) << 23u) + q);
}
