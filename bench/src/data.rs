//! Deterministic synthetic inputs: f32 weights and activations, and valid packed ternary weights
//! made directly (the 520 MB decode stack would need 8 GB of f32 to quantize).
//!
//! Values only need to be realistic enough that every code path runs (signs, zeros, a spread of
//! magnitudes); a seeded generator keeps runs comparable. Generation is parallel because the
//! 8B-class matrices hold 58 M values.

use bitnet_cpu_ref::TernaryMatrix;
use rayon::prelude::*;

/// Values generated per parallel chunk (each chunk has its own seed, so output is thread-count
/// independent).
const CHUNK: usize = 1 << 16;

/// SplitMix64: tiny, fast, and good enough for benchmark inputs.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` f32 values, roughly bell-shaped in (-2, 2) (sum of two uniforms), from `seed`.
pub fn floats(len: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; len];
    v.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let mut s = seed ^ (c as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        for x in chunk {
            let r = splitmix(&mut s);
            let a = (r & 0xFF_FFFF) as f32 / 16_777_216.0;
            let b = ((r >> 32) & 0xFF_FFFF) as f32 / 16_777_216.0;
            *x = 2.0 * (a + b) - 2.0;
        }
    });
    v
}

/// A valid packed ternary `[n, k]` matrix with codes drawn at 1/4 (−1), 1/2 (0), 1/4 (+1).
///
/// Random 2-bit fields are uniform over 0..4; code 3 is invalid, so it is turned into code 1
/// (weight 0) by clearing its high bit. Padding fields of a row's last word are set to code 1.
pub fn ternary(n: usize, k: usize, seed: u64) -> Result<TernaryMatrix, bitnet_cpu_ref::Error> {
    ternary_scaled(n, k, seed, 0.5)
}

/// [`ternary`] with weight scale `scale`.
pub fn ternary_scaled(
    n: usize,
    k: usize,
    seed: u64,
    scale: f32,
) -> Result<TernaryMatrix, bitnet_cpu_ref::Error> {
    let wpr = bitnet_cpu_ref::layout::words_per_row(k);
    let tail = k % bitnet_cpu_ref::layout::WEIGHTS_PER_WORD;
    let (pad_mask, pad_value) = (tail..16).fold((0u32, 0u32), |(m, v), kk| {
        let sh = bitnet_cpu_ref::layout::code_shift(kk);
        (m | (3 << sh), v | (1 << sh))
    });
    let mut words = vec![0u32; n * wpr];
    words
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut s = seed ^ (c as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
            let base = c * CHUNK;
            for (i, w) in chunk.iter_mut().enumerate() {
                let r = splitmix(&mut s) as u32;
                let both = r & (r >> 1) & 0x5555_5555; // low bit of every field holding code 3
                let mut word = r & !(both << 1);
                if tail != 0 && (base + i) % wpr == wpr - 1 {
                    word = (word & !pad_mask) | pad_value;
                }
                *w = word;
            }
        });
    TernaryMatrix::from_packed(words, n, k, scale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ternary_is_valid_with_and_without_padding() {
        for k in [16, 2560, 33] {
            let m = super::ternary(7, k, 1).unwrap();
            let v = m.to_i8();
            let zeros = v.iter().filter(|&&x| x == 0).count() as f64 / v.len() as f64;
            assert!(v.len() < 100 || (0.4..0.6).contains(&zeros), "{zeros}");
        }
    }

    #[test]
    fn floats_are_deterministic_and_spread() {
        let a = super::floats(100_000, 3);
        assert_eq!(a, super::floats(100_000, 3));
        assert!(a.iter().all(|x| (-2.0..2.0).contains(x)));
        assert!(a.iter().any(|&x| x < -1.0) && a.iter().any(|&x| x > 1.0));
    }
}
