// Shared by the float tensor kernels (concatenated with them): the non-finite test every kernel
// uses to fill its status words.

// Values per invocation of the linear elementwise kernels (unary, scalar, binary), 256 apart:
// coalesced, and their loads are independent, so they are in flight together. A workgroup of 256
// covers 1024 values (`ELEMENTWISE_GROUP_VALUES` in src/tensor.rs sizes the engine's grids).
// The one-input kernels (unary, scalar; util_copy.wgsl too) load all of an invocation's values
// (into a vec4: PER_THREAD must stay 4) before they store any: a load may not move above a store
// to another binding (the two could alias), so interleaved each load waited on the store before
// it (H200: copy 3105 → 4164 GB/s, relu 2855 → 3737). The binary kernel keeps one value at a
// time: loads first made it 5 % slower (4153 → 3951 GB/s; its two loads already overlap).
const PER_THREAD: u32 = 4u;

// u as f32, rounded to nearest even like Rust's `as f32`. Vulkan leaves the rounding of an
// integer-to-float conversion to the driver (it matters above 2^24); here both halves convert
// exactly, the product by 2^16 is exact, and the one rounding is the addition's, which rounds
// to nearest even as the exact kernels' products and sums already require of the device.
fn u32_to_f32(u: u32) -> f32 {
    return f32(u >> 16u) * 65536.0 + f32(u & 0xffffu);
}

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// e^x with error independent of |x|; +inf above the f32 range, 0 far below it (range reduction
// x = n·ln2 + r, exact 2^n scaling). The unary ops, softmax and attention share it.
fn exp_reduced(x: f32) -> f32 {
    if (x > 88.72284) {
        return bitcast<f32>(0x7f800000u);
    }
    if (x < -103.97209) {
        return 0.0;
    }
    let n = round(x * 1.4426950408889634);
    // ln2 = LN2_HI + LN2_LO; LN2_HI has 16 significant bits, so n·LN2_HI is exact for |n| <= 150.
    var r = fma(-n, 0.693145751953125, x);
    r = fma(-n, 1.4286068203094172e-06, r);
    // 2^n as two powers of two built from their exponent bits (each within [-75, 64], so normal):
    // exp(r) · 2^h is exact, and the second product rounds only a subnormal result — the same
    // values as ldexp, without its general-purpose code (see docs/perf/decode-step.md,
    // "Decode attention": ldexp made most of the kernels' exponentials' code).
    let ni = i32(n);
    let h = ni / 2;
    let p1 = bitcast<f32>(u32(h + 127) << 23u);
    let p2 = bitcast<f32>(u32(ni - h + 127) << 23u);
    return (exp(r) * p1) * p2;
}
