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

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}
