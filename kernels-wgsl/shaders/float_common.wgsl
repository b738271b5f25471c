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
