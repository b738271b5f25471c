//! Packed layouts: explicit bit positions, round trips for every K mod 16, and property tests
//! (packing is a bijection; quantize ∘ dequantize keeps the codes).

use bitnet_cpu_ref::layout::{activation_words_per_row, words_per_row};
use bitnet_cpu_ref::{
    QuantizedActivations, TernaryMatrix, canonical_abs_sum, dequantize_weights, quantize_weights,
};
use proptest::prelude::*;

#[test]
fn explicit_bit_positions() {
    // K = 16, a single +1 at k = 5: group g = 5 / 4 = 1, lane i = 5 % 4 = 1, so its code 2 sits at
    // bit 8 i + 2 g = 10. All other codes are 1 (weight 0): 0x5555_5555 with field 10 changed
    // from 01 to 10 is 0x5555_5555 + 0x400 = 0x5555_5955.
    let mut v = [0i8; 16];
    v[5] = 1;
    let w = TernaryMatrix::from_i8(&v, 1, 16, 1.0).unwrap();
    assert_eq!(w.words(), &[0x5555_5955]);
    // K = 3, weights [-1, 1, 0]: codes 0 (bits 0-1), 2 (bits 8-9), 1 (bits 16-17); padding
    // k = 3..16 holds code 1: 0x5555_5555 - 1 (k = 0 → 00) + 0x100 (k = 1 → 10) = 0x5555_5654.
    let w = TernaryMatrix::from_i8(&[-1, 1, 0], 1, 3, 1.0).unwrap();
    assert_eq!(w.words(), &[0x5555_5654]);
    // Activations [1, -1, 2, -128, 5], K = 5 → 4 words (K rounded up to 16, 4 per word):
    // word 0 = bytes [0x01, 0xFF, 0x02, 0x80] little-endian = 0x8002_FF01, word 1 = 5, then 0.
    let xq = QuantizedActivations::from_parts(vec![1, -1, 2, -128, 5], vec![1.0], 1, 5).unwrap();
    assert_eq!(xq.packed(), vec![0x8002_FF01, 5, 0, 0]);
}

#[test]
fn round_trip_every_k_mod_16() {
    for k in 1..=48 {
        for n in [1, 3] {
            let values: Vec<i8> = (0..n * k).map(|i| ((i * 7 + k) % 3) as i8 - 1).collect();
            let w = TernaryMatrix::from_i8(&values, n, k, 0.5).unwrap();
            assert_eq!(w.words().len(), n * k.div_ceil(16));
            assert_eq!(w.to_i8(), values, "k = {k}");
            let again = TernaryMatrix::from_packed(w.words().to_vec(), n, k, 0.5).unwrap();
            assert_eq!(again, w);
            // Padding positions hold code 1.
            for row in 0..n {
                let last = w.row_words(row)[words_per_row(k) - 1];
                for p in k % 16..16 {
                    if k % 16 != 0 {
                        let shift = bitnet_cpu_ref::layout::code_shift(p);
                        assert_eq!((last >> shift) & 3, 1, "k = {k}, padding {p}");
                    }
                }
            }
            // Activations: the packed view holds the values then zero bytes.
            let xv: Vec<i8> = (0..n * k)
                .map(|i| (i as i32 * 37 % 256 - 128) as i8)
                .collect();
            let xq = QuantizedActivations::from_parts(xv.clone(), vec![1.0; n], n, k).unwrap();
            let packed = xq.packed();
            let wpr = activation_words_per_row(k);
            assert_eq!(packed.len(), n * wpr);
            for row in 0..n {
                let bytes: Vec<i8> = packed[row * wpr..(row + 1) * wpr]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .map(|b| b as i8)
                    .collect();
                assert_eq!(&bytes[..k], &xv[row * k..(row + 1) * k]);
                assert!(bytes[k..].iter().all(|&b| b == 0));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// values → words → values is the identity, and words → values → words too (for valid words).
    #[test]
    fn packing_is_a_bijection(n in 1usize..4, k in 1usize..70, seed in any::<u64>()) {
        let values: Vec<i8> = (0..n * k)
            .map(|i| ((seed >> (i % 60)) as usize + i) % 3)
            .map(|c| c as i8 - 1)
            .collect();
        let w = TernaryMatrix::from_i8(&values, n, k, 1.0).unwrap();
        prop_assert_eq!(w.to_i8(), values);
        let back = TernaryMatrix::from_i8(&w.to_i8(), n, k, 1.0).unwrap();
        prop_assert_eq!(back.words(), w.words());
    }

    /// Words built from valid codes (padding code 1) are accepted and canonical; changing one
    /// field to code 3, or one padding field away from 1, is rejected at exactly that field.
    #[test]
    fn packed_words_validate_exactly(
        k in 17usize..33,
        codes in prop::collection::vec(0u32..3, 32),
        corrupt in 0usize..32,
        bad in 0u32..4,
    ) {
        let field = |p: usize| if p < k { codes[p] } else { 1 };
        let word = |j: usize, f: &dyn Fn(usize) -> u32| {
            (0..16).fold(0u32, |w, i| w | f(16 * j + i) << bitnet_cpu_ref::layout::code_shift(i))
        };
        let words = vec![word(0, &field), word(1, &field)];
        let w = TernaryMatrix::from_packed(words.clone(), 1, k, 1.0).unwrap();
        let back = TernaryMatrix::from_i8(&w.to_i8(), 1, k, 1.0).unwrap();
        prop_assert_eq!(back.words(), &words[..]);
        // Corrupt one field: code 3 anywhere, or any code other than 1 in the padding.
        let invalid = bad == 3 || (corrupt >= k && bad != 1);
        let changed = |p: usize| if p == corrupt { bad } else { field(p) };
        let corrupted = vec![word(0, &changed), word(1, &changed)];
        match TernaryMatrix::from_packed(corrupted, 1, k, 1.0) {
            Err(bitnet_cpu_ref::Error::InvalidPackedCode { word, position, code, .. }) => {
                prop_assert!(invalid);
                prop_assert_eq!((word, position, code), (corrupt / 16, corrupt % 16, bad));
            }
            Ok(_) => prop_assert!(!invalid),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    /// quantize(dequantize(q)) has q's codes, and scale max(s · nnz / (N·K), 1e-5) up to the
    /// rounding of the canonical sum (relative 1e-5). The scale is *not* a fixed point.
    #[test]
    fn quantize_dequantize_keeps_codes(n in 1usize..5, k in 1usize..80, seed in any::<u32>(), amp in 1e-7f32..10.0) {
        let mut s = seed | 1;
        let w: Vec<f32> = (0..n * k).map(|_| {
            s ^= s << 13; s ^= s >> 17; s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * amp
        }).collect();
        let q = quantize_weights(&w, n, k).unwrap();
        let d = dequantize_weights(&q);
        let q2 = quantize_weights(&d, n, k).unwrap();
        prop_assert_eq!(q2.to_i8(), q.to_i8());
        let nnz = q.to_i8().iter().filter(|&&c| c != 0).count();
        let want = (f64::from(q.scale()) * nnz as f64 / (n * k) as f64).max(1e-5);
        let got = f64::from(q2.scale());
        prop_assert!((got - want).abs() <= 1e-5 * want, "scale {} vs {}", got, want);
        prop_assert_eq!(q2.scale(), (canonical_abs_sum(&d) / (n * k) as f32).max(1e-5));
    }
}

/// `encode_ternary` is total: -1, 0, 1 give codes 0, 1, 2, and values outside are clamped as
/// `pack_word` clamps them (127 overflowed `w + 1`; -2 gave `0xFFFF_FFFF`).
#[test]
fn encode_ternary_clamps_out_of_range_values() {
    use bitnet_cpu_ref::layout::encode_ternary;
    assert_eq!([-1, 0, 1].map(encode_ternary), [0, 1, 2]);
    assert_eq!([i8::MIN, -2, 2, i8::MAX].map(encode_ternary), [0, 0, 2, 2]);
}
