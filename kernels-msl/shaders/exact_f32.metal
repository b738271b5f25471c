// Correctly rounded f32 arithmetic on bit patterns (round to nearest, ties to even), for the few
// float operations whose exact result the bit layouts depend on.
//
// Why integers: Metal's default compile options enable fast math, under which `/` is not
// correctly rounded and `+` / `*` chains may be reassociated or contracted. These routines only
// use integer operations on the IEEE-754 bit patterns, so no compiler mode, flush-to-zero or
// denormals-are-zero setting can change their results. They are not hot: the divisions run once
// per row or per tensor, the products once per output row, the sums only in weight quantization.
//
// Why bit patterns in and out: fast math also lets the compiler assume that no float parameter,
// return value or operation is NaN or infinite (clang marks them so). A helper that took or
// returned `float` would hand it exactly such values (infinity on overflow, NaN for an invalid
// operation or operand), and a test of their bits could be folded away, or the bits themselves
// rewritten (clang 19 turns `as_type<uint>(a) & 0x7fffffff` of a float parameter into a float
// fabs). So every operand and result is a `uint` holding an f32 bit pattern: callers convert
// with as_type where an f32 is loaded from or stored to a buffer, and do float arithmetic only on
// values known to be finite.
//
// Domain: the operations take magnitudes (sign bits are ignored). Zero, subnormal, normal and
// infinite operands are handled as IEEE-754 specifies, and subnormal or overflowing results are
// rounded as IEEE-754 specifies; a NaN operand gives the canonical quiet NaN 0x7fc00000.
// Every routine is checked against IEEE arithmetic by the emulation self-test, in the sanitizer
// builds and in the fast-math build.

// Bit pattern of the canonical quiet NaN returned for invalid operations.
constexpr constant uint F32_QNAN_BITS = 0x7fc00000u;

// A positive finite non-zero float as `sig * 2^(exp - 23)` with bit 23 of `sig` set.
struct ExactParts {
    uint sig;
    int exp;
};

// Splits the bits of a positive, finite, non-zero float (normal or subnormal).
inline ExactParts exact_split(uint bits) {
    ExactParts p;
    const uint biased = bits >> 23u;
    const uint frac = bits & 0x7fffffu;
    if (biased == 0u) {
        // Subnormal: frac * 2^-149; shift the leading one up to bit 23.
        const uint shift = clz(frac) - 8u;
        p.sig = frac << shift;
        p.exp = -126 - int(shift);
    } else {
        p.sig = frac | 0x800000u;
        p.exp = int(biased) - 127;
    }
    return p;
}

// Rounds the exact positive value `(q + f) * 2^(biased - 151)` to the bits of the nearest float,
// ties to even. `q` is in [2^24, 2^25): 24 significand bits and one round bit; `f` in [0, 1) is
// only known through `sticky` (f != 0). `biased` is the biased exponent of a normal result; at or
// below 0 the result is subnormal (or zero), at or above 255 it overflows to infinity.
inline uint exact_round_pack(int biased, uint q, bool sticky) {
    if (biased >= 255) {
        return F32_EXP_MASK;
    }
    uint mant;
    uint round_bit;
    if (biased >= 1) {
        mant = q >> 1u;
        round_bit = q & 1u;
    } else {
        // Subnormal significand (units of 2^-149) = (q + f) * 2^-sh.
        const int sh = 2 - biased;
        if (sh > 25) {
            // Below half the smallest subnormal: rounds to zero.
            return 0u;
        }
        mant = q >> uint(sh);
        round_bit = (q >> uint(sh - 1)) & 1u;
        sticky = sticky || (q & ((1u << uint(sh - 1)) - 1u)) != 0u;
    }
    if (round_bit != 0u && (sticky || (mant & 1u) != 0u)) {
        mant += 1u;
    }
    if (biased < 1) {
        // A rounding carry into bit 23 correctly yields the smallest normal number.
        return mant;
    }
    // `mant` holds the implicit bit (2^23), which adds one to the exponent field; a rounding carry
    // to 2^24 bumps the exponent again (up to infinity, as IEEE-754 requires).
    return (uint(biased - 1) << 23u) + mant;
}

// |a| / |b| on f32 bit patterns, correctly rounded. (Shift-subtract long division of the
// significands; the remainder stays below 2^25, so u32 never overflows.)
inline uint exact_div(uint a, uint b) {
    const uint ab = a & F32_ABS_MASK;
    const uint bb = b & F32_ABS_MASK;
    // Special operands, in IEEE order: NaN, inf/inf, 0/0, x/inf, 0/x, x/0, inf/x.
    if (ab > F32_EXP_MASK || bb > F32_EXP_MASK || (ab == F32_EXP_MASK && bb == F32_EXP_MASK) ||
        (ab == 0u && bb == 0u)) {
        return F32_QNAN_BITS;
    }
    if (bb == F32_EXP_MASK || ab == 0u) {
        return 0u;
    }
    if (bb == 0u || ab == F32_EXP_MASK) {
        return F32_EXP_MASK;
    }
    const ExactParts x = exact_split(ab);
    const ExactParts y = exact_split(bb);
    // Align so that the significand quotient rem / y.sig lies in [1, 2).
    uint rem = x.sig;
    int e = x.exp - y.exp;
    if (rem < y.sig) {
        rem = rem << 1u;
        e = e - 1;
    }
    uint q = 0u;
    for (uint i = 0u; i < 25u; ++i) {
        q = q << 1u;
        if (rem >= y.sig) {
            rem = rem - y.sig;
            q = q | 1u;
        }
        rem = rem << 1u;
    }
    return exact_round_pack(e + 127, q, rem != 0u);
}

// |a| * |b| on f32 bit patterns, correctly rounded (48-bit significand product from `*` and
// `mulhi`).
inline uint exact_mul(uint a, uint b) {
    const uint ab = a & F32_ABS_MASK;
    const uint bb = b & F32_ABS_MASK;
    if (ab > F32_EXP_MASK || bb > F32_EXP_MASK) {
        return F32_QNAN_BITS;
    }
    if (ab == F32_EXP_MASK || bb == F32_EXP_MASK) {
        // inf * 0 is invalid; inf * x is inf.
        return (ab == 0u || bb == 0u) ? F32_QNAN_BITS : F32_EXP_MASK;
    }
    if (ab == 0u || bb == 0u) {
        return 0u;
    }
    const ExactParts x = exact_split(ab);
    const ExactParts y = exact_split(bb);
    // P = x.sig * y.sig lies in [2^46, 2^48): hi holds bits 32..47, lo bits 0..31.
    const uint lo = x.sig * y.sig;
    const uint hi = mulhi(x.sig, y.sig);
    if (hi >= 0x8000u) {
        // P >= 2^47: keep bits 47..23.
        const uint q = (hi << 9u) | (lo >> 23u);
        return exact_round_pack(x.exp + y.exp + 128, q, (lo & 0x7fffffu) != 0u);
    }
    // P < 2^47: keep bits 46..22.
    const uint q = (hi << 10u) | (lo >> 22u);
    return exact_round_pack(x.exp + y.exp + 127, q, (lo & 0x3fffffu) != 0u);
}

// |a| + |b| on f32 bit patterns, correctly rounded (the additions of the canonical absolute-value
// sum).
inline uint exact_abs_add(uint a, uint b) {
    uint hi = a & F32_ABS_MASK;
    uint lo = b & F32_ABS_MASK;
    if (hi < lo) {
        // Non-negative floats order like their bit patterns.
        const uint t = hi;
        hi = lo;
        lo = t;
    }
    if (hi >= F32_EXP_MASK) {
        // inf + finite = inf; a NaN is the larger pattern whenever one is present.
        return hi > F32_EXP_MASK ? F32_QNAN_BITS : F32_EXP_MASK;
    }
    if (lo == 0u) {
        return hi;
    }
    if (hi < 0x800000u) {
        // Both subnormal: the patterns add exactly (a carry into bit 23 makes a normal number).
        return hi + lo;
    }
    // Significands with 3 extra low bits (guard, round, sticky), aligned to hi's exponent.
    const int e_hi = int(hi >> 23u);
    const uint a_sig = ((hi & 0x7fffffu) | 0x800000u) << 3u;
    int e_lo = int(lo >> 23u);
    uint b_sig = lo & 0x7fffffu;
    if (e_lo == 0) {
        e_lo = 1;
    } else {
        b_sig = b_sig | 0x800000u;
    }
    b_sig = b_sig << 3u;
    const uint d = uint(e_hi - e_lo);
    uint b_aligned = 1u;
    if (d < 27u) {
        b_aligned = b_sig >> d;
        if ((b_aligned << d) != b_sig) {
            b_aligned = b_aligned | 1u;
        }
    }
    const uint s = a_sig + b_aligned;
    if (s >= (1u << 27u)) {
        // Carry out of the significand: one more exponent step.
        return exact_round_pack(e_hi + 1, s >> 3u, (s & 7u) != 0u);
    }
    return exact_round_pack(e_hi, s >> 2u, (s & 3u) != 0u);
}
