// Shared snippet: IEEE correctly rounded f32 square root (round to nearest) for the RMS norms'
// `1 / sqrt(mean square + eps)`, so the GPU's norms match the CPU reference's bit for bit.
//
// Vulkan lets `sqrt` be off by a few ulp (inherited from inversesqrt), and NVIDIA's is: on the
// H200 a norm's inverse root differed from cpu-ref's in the last bit for some rows, which then
// moved a BitLinear's activation scale. This takes the shader's root and corrects it with
// Tuckerman's test: s is the correctly rounded root of a iff s · prev(s) < a <= s · next(s),
// the products compared exactly in integers (24 × 24-bit significands), so it is immune to
// fused or unfused multiply-adds, flush-to-zero and reassociation. Ties cannot occur for a root.
//
// Needs exact_div.wgsl (exact_div_split).

// The 48-bit product of two 24-bit integers as (high, low) words.
fn sqrt_mul_24(x: u32, y: u32) -> vec2<u32> {
    let ll = (x & 0xffffu) * (y & 0xffffu);
    let mid = (x & 0xffffu) * (y >> 16u) + (x >> 16u) * (y & 0xffffu);
    let lo = ll + (mid << 16u);
    let carry = select(0u, 1u, lo < ll);
    return vec2<u32>((x >> 16u) * (y >> 16u) + (mid >> 16u) + carry, lo);
}

// The sign of s · t − a (−1, 0, 1) for positive finite s, t and a, exactly.
fn sqrt_cmp_product(s: f32, t: f32, a: f32) -> i32 {
    let sp = exact_div_split(bitcast<u32>(s));
    let tp = exact_div_split(bitcast<u32>(t));
    let ap = exact_div_split(bitcast<u32>(a));
    // s · t = S T 2^(es + et − 46) and a = A 2^(ea − 23): compare S T with A 2^k.
    let k = ap.exp - sp.exp - tp.exp + 23;
    if (k < 0) {
        // S T >= 2^46 > A 2^k.
        return 1;
    }
    if (k > 40) {
        // A 2^k >= 2^63 > S T.
        return -1;
    }
    let p = sqrt_mul_24(sp.sig, tp.sig);
    let ku = u32(k);
    var q = vec2<u32>(0u, ap.sig << ku);
    if (ku >= 32u) {
        q = vec2<u32>(ap.sig << (ku - 32u), 0u);
    } else if (ku > 0u) {
        q.x = ap.sig >> (32u - ku);
    }
    if (p.x != q.x) {
        return select(-1, 1, p.x > q.x);
    }
    if (p.y != q.y) {
        return select(-1, 1, p.y > q.y);
    }
    return 0;
}

// sqrt(a), correctly rounded. Zero, infinite and NaN `a` come back as the shader's sqrt gives
// them.
//
// A subnormal `a` is first scaled to a normal value: drivers that flush subnormals (NVIDIA's
// Vulkan driver does) read it as zero in every float operation, and on the H200 sqrt(1e-45)
// gave 0 where IEEE gives 3.7e-23. Its integer significand converted to f32 is exact, and so is
// scaling by powers of two between normal values: sqrt(a) = sqrt(a · 2^64) · 2^-32, rounded once.
fn sqrt_rounded(a: f32) -> f32 {
    let bits = bitcast<u32>(a);
    if (bits != 0u && bits < 0x00800000u) {
        // a = bits · 2^-149, so a · 2^64 = bits · 2^-85 (at least 2^-85: normal).
        return sqrt_rounded_normal(f32(bits) * 0x1p-85f) * 0x1p-32f;
    }
    return sqrt_rounded_normal(a);
}

// sqrt_rounded for an `a` that is not subnormal (the root of a normal `a` is normal).
fn sqrt_rounded_normal(a: f32) -> f32 {
    var s = sqrt(a);
    let bits = bitcast<u32>(s);
    if (!(a > 0.0) || bits == 0u || bits >= 0x7f800000u) {
        return s;
    }
    // The shader's root is within a few ulp: step to the neighbour Tuckerman's test points to.
    for (var i = 0u; i < SQRT_STEPS; i++) {
        let down = bitcast<f32>(bitcast<u32>(s) - 1u);
        let up = bitcast<f32>(bitcast<u32>(s) + 1u);
        if (sqrt_cmp_product(s, down, a) >= 0) {
            s = down;
        } else if (sqrt_cmp_product(s, up, a) < 0) {
            s = up;
        } else {
            break;
        }
    }
    return s;
}

// Most corrections of the shader's root (Vulkan's bound is a few ulp; NVIDIA's was one ulp off
// for some inputs). Steps past the first that finds the root cost nothing: the loop ends there.
const SQRT_STEPS: u32 = 6u;
