//! Helpers shared by cpu-ref's test files.

/// Deterministic values in `[-amp, amp)` (xorshift).
pub fn rnd(n: usize, seed: u32, amp: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 2.0 * amp
        })
        .collect()
}
