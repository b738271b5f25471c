// Shared by the float tensor kernels (concatenated with them): the non-finite test every kernel
// uses to fill its status words.

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}
