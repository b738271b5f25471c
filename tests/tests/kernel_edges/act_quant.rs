//! Activation quantization (`act_quant.wgsl`, `act_quant_vec4.wgsl`) at late indices and around
//! the register limit.

use super::*;

/// Values and absmax bits equal, else a panic naming the first difference.
fn assert_acts_eq(got: &QuantizedActivations, want: &QuantizedActivations, ctx: &str) {
    assert_eq!((got.m(), got.k()), (want.m(), want.k()), "{ctx}: shape");
    for (r, (g, w)) in got.absmax().iter().zip(want.absmax()).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{ctx}: row {r} absmax {g:e} vs cpu-ref {w:e}"
        );
    }
    if let Some(i) = (0..want.values().len()).find(|&i| got.values()[i] != want.values()[i]) {
        panic!(
            "{ctx}: value {i} (row {}, k {}) is {} vs cpu-ref {}",
            i / want.k(),
            i % want.k(),
            got.values()[i],
            want.values()[i]
        );
    }
}

/// Late indices of a row of `k` values for the act_quant kernels: the last element and its
/// neighbours, the first and last value of thread 0's last register slot (word 256 u of the row,
/// u the last slot holding values), a value in slot 15 (words 3840..4095), the last value held
/// in registers (16383) and the first one past them (16384, fallback rows only).
fn late_positions(k: usize) -> Vec<usize> {
    let words = k.div_ceil(4);
    let last_slot_word = 256 * ((words - 1) / 256);
    let mut p = vec![
        k - 1,
        k - 2,
        k - 5,
        4 * last_slot_word,
        4 * last_slot_word + 3,
        4 * (3840 + 129) + 2,
        16383,
        16384,
        k / 2 + 1,
    ];
    p.retain(|&i| i < k);
    p.sort_unstable();
    p.dedup();
    p
}

/// One row length through one act_quant kernel: every late position with every bad value, at
/// M = 1 and in row 2 of M = 3 (plus two bad values, the first one in row 1); then finite rows
/// with the maximum at late positions, and one row below the 1e-5 floor.
fn check_act_quant_row_length(k: usize) {
    let e = engine();
    let quant = |x: &[f32], m: usize| {
        (
            e.quantize_activations(x, m, k),
            cpu_ref::quantize_activations(x, m, k).map_err(Error::from),
        )
    };
    for (pi, &pos) in late_positions(k).iter().enumerate() {
        for (bi, &bad) in BADS.iter().enumerate() {
            let seed = (k * 100 + pi * 3 + bi) as u64;
            for m in [1usize, 3] {
                let ctx = format!("act_quant K {k} M {m}: {bad} at row {} k {pos}", m - 1);
                let mut x = random_normal(seed, m * k, 1.0);
                x[(m - 1) * k + pos] = bad;
                let (got, want) = quant(&x, m);
                let want = err_of(want, "cpu-ref", &ctx);
                assert_eq!(err_of(got, "the GPU", &ctx), want, "{ctx}");
            }
        }
    }
    // Two bad values: row 1's last element comes first in flat order.
    let mut x = random_normal(k as u64, 3 * k, 1.0);
    x[2 * k] = f32::NAN;
    x[k + k - 1] = f32::INFINITY;
    let ctx = format!("act_quant K {k}: two bad values");
    let (got, want) = quant(&x, 3);
    let want = err_of(want, "cpu-ref", &ctx);
    assert!(
        matches!(want, Error::NonFinite { index, .. } if index == 2 * k - 1),
        "{ctx}: {want:?}"
    );
    assert_eq!(err_of(got, "the GPU", &ctx), want, "{ctx}");

    // Finite rows, bit-identical: the maximum at each late position (negative in even rows, so
    // the sign is cleared, positive in odd ones), the rest random; one row entirely below the
    // 1e-5 floor.
    let positions = late_positions(k);
    let m = positions.len() + 1;
    let mut x = random_normal(k as u64 + 7, m * k, 1.0);
    for (r, &pos) in positions.iter().enumerate() {
        x[r * k + pos] = if r % 2 == 0 { -9.75 } else { 9.75 } - r as f32 * 0.5;
    }
    for v in &mut x[(m - 1) * k..] {
        *v *= 1e-7;
    }
    let ctx = format!("act_quant K {k} M {m}: finite");
    let (got, want) = quant(&x, m);
    assert_acts_eq(
        &got.unwrap_or_else(|err| panic!("{ctx}: {err}")),
        &want.unwrap(),
        &ctx,
    );
    // The engine stays usable after the errors: a plain random row.
    let x = random_normal(k as u64 + 9, k, 3.0);
    let (got, want) = quant(&x, 1);
    assert_acts_eq(
        &got.unwrap(),
        &want.unwrap(),
        &format!("act_quant K {k}: after"),
    );
}

#[test]
fn act_quant_generic_late_indices_and_register_limit() {
    // K % 4 != 0: act_quant.wgsl. Registers hold rows of up to 4096 packed words (K <= 16383
    // here); 16385 and 20003 take the fallback loops.
    for k in [5003, 16381, 16383, 16385, 20003] {
        check_act_quant_row_length(k);
    }
}

#[test]
fn act_quant_vec4_late_indices_and_register_limit() {
    // K % 4 == 0: act_quant_vec4.wgsl. 16384 fills the registers exactly; 16388 (one padded
    // word group past them) and 20000 take the fallback loops.
    for k in [5004, 16384, 16388, 20000] {
        check_act_quant_row_length(k);
    }
}

/// The packed rows' padding bytes are zero on the GPU, as the layout promises (`layout.rs`): a
/// kernel that quantized one value past the row into its first padding byte changed no output
/// (weights pad with code 0), so only the bytes themselves can show it.
#[test]
fn act_quant_padding_bytes_are_zero() {
    let e = engine();
    // K % 16 != 0 through both kernels (K % 4 != 0: act_quant.wgsl; K % 4 == 0: the vec4 one),
    // rows in registers and rows past them.
    for k in [13, 5003, 5004, 20003] {
        let m = 3;
        let x = random_normal(k as u64, m * k, 1.0);
        let xt = e.upload_f32(&x, &[m, k]).unwrap();
        let got = e
            .quantize_activations_tensor(&xt)
            .unwrap()
            .read_bytes()
            .unwrap();
        let q = cpu_ref::quantize_activations(&x, m, k).unwrap();
        let words = cpu_ref::layout::activation_words_per_row(k);
        let mut want = Vec::with_capacity(m * words * 4);
        for row in q.values().chunks(k) {
            let mut packed = vec![0u32; words];
            cpu_ref::layout::pack_activation_row(row, &mut packed);
            want.extend(packed.iter().flat_map(|w| w.to_le_bytes()));
        }
        assert_eq!(got.len(), want.len(), "K {k}: packed bytes");
        if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
            let row = i / (4 * words);
            panic!(
                "K {k}: byte {} of row {row} is {} vs {} (padding starts at byte {k})",
                i % (4 * words),
                got[i],
                want[i]
            );
        }
    }
}
