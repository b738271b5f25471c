// Shared by the float tensor kernels (concatenated with them): the non-finite test every kernel
// uses to fill its status words.

// Values per invocation of the linear elementwise kernels (unary, scalar, binary), 256 apart:
// coalesced, and their loads are independent, so they are in flight together. A workgroup of 256
// covers 1024 values (`ELEMENTWISE_GROUP_VALUES` in src/tensor.rs sizes the engine's grids).
const PER_THREAD: u32 = 4u;

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}
