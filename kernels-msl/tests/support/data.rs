//! Deterministic test inputs (xorshift), with the values that stress rounding: exact ties, zeros,
//! negative zeros, subnormals, huge magnitudes.

/// A small deterministic generator.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// An index in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `n` values: mostly uniform with a per-call magnitude, sprinkled with special values.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let magnitude = [0.02f32, 1.0, 3.0, 250.0][rng.below(4)];
    (0..n)
        .map(|_| match rng.below(40) {
            0 => 0.0,
            1 => -0.0,
            2 => 1e-40,                        // subnormal
            3 => -(rng.below(8) as f32) * 0.5, // halves: ties after scaling by powers of 2
            4 => (rng.below(255) as f32 - 127.0) * magnitude / 127.0,
            _ => rng.unit() * magnitude,
        })
        .collect()
}

/// Rows of activations `[m, k]` where some rows are special: all zero, a single huge value,
/// exact half-way ties (absmax 127 makes inv = 1, so x.5 values tie), subnormal-only.
pub fn activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut x = values(m * k, seed);
    for (r, row) in x.chunks_exact_mut(k).enumerate() {
        match (r + seed as usize) % 6 {
            1 => row.fill(0.0),
            2 => {
                for (i, v) in row.iter_mut().enumerate() {
                    *v = (i % 254) as f32 - 127.0 + if i % 3 == 0 { 0.5 } else { 0.0 };
                }
                row[0] = 127.0;
            }
            3 => {
                row.fill(1e-40);
                row[k / 2] = -1e-39;
            }
            4 => row[k - 1] = 1e30,
            _ => {}
        }
    }
    x
}

/// Weights `[n, k]` with a chosen flavour: 0 random, 1 all zero, 2 subnormal, 3 exact ties,
/// 4 order-sensitive: one ±2^24 among ±1s and zeros. Once a partial sum reaches 2^24 every +1
/// is a tie (rounded to even), so the sum depends on the exact order of every addition; with
/// N·K a power of two the division by N·K is exact and any other order changes the scale.
pub fn weights(n: usize, k: usize, flavour: u32, seed: u64) -> Vec<f32> {
    match flavour {
        4 => {
            let mut rng = Rng::new(seed);
            let mut w: Vec<f32> = (0..n * k)
                .map(|_| [0.0, 1.0, -1.0, 1.0][rng.below(4)])
                .collect();
            let spike = rng.below(n * k);
            w[spike] = 16_777_216.0;
            w
        }
        1 => vec![0.0; n * k],
        2 => values(n * k, seed).iter().map(|v| v * 1e-39).collect(),
        3 => {
            // Mean |w| = 1 exactly (s = 1, inv_s = 1): +-0.5 tie to 0, +-1.5 round to +-2 -> +-1.
            let pattern = [2.0, 0.5, -0.5, 1.0, 1.5, -1.5, 0.5, 0.5];
            (0..n * k)
                .map(|i| {
                    if (n * k).is_multiple_of(8) {
                        pattern[i % 8]
                    } else {
                        1.0
                    }
                })
                .collect()
        }
        _ => values(n * k, seed),
    }
}
