//! `softmax_last` with `-inf` masks on the GPU against cpu-ref: masked outputs exactly 0 and the
//! rest within softmax's tolerance, over row lengths below, at and past the kernel's 256-lane
//! workgroup (one fold per lane, several), chunked over a small binding limit and on the CPU
//! backend; a row entirely `-inf`, NaN and `+inf` give cpu-ref's very errors, NaN and `+inf`
//! outranking a masked row as cpu-ref's whole-input check does, across chunks too.

use bitnet_tests::{gpu_engine, gpu_engine_with};
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{Engine, EngineOptions, Error};

use super::common::{assert_f32, cpu_error, engine, gpu_error, host, up, values};

const NINF: f32 = f32::NEG_INFINITY;

/// Rows of `len` with masks: row 0 at the first and last entry, row 1 every third entry, row 2
/// all but the last three, row 3 all but one (in the middle), row 4 none.
fn masked_rows(seed: u64, len: usize) -> Vec<f32> {
    let mut x = values(seed, 5 * len, -30.0, 30.0);
    for (i, v) in x.iter_mut().enumerate() {
        let (r, c) = (i / len, i % len);
        let masked = match r {
            0 => c == 0 || c == len - 1,
            1 => c % 3 == 1,
            2 => c + 3 < len,
            3 => c != len / 2,
            _ => false,
        };
        if masked {
            *v = NINF;
        }
    }
    x
}

/// Asserts `e`'s softmax of `x` ([rows, len]) matches cpu-ref, masked entries exactly 0.
fn check_values(e: &Engine, x: &[f32], shape: &[usize], what: &str) {
    let want = cpu::softmax_last(&host(x, shape)).unwrap();
    let got = e.softmax_last(&up(e, x, shape)).unwrap();
    assert_f32("softmax", what, &got, &want);
    let g = got.read_f32().unwrap();
    for (i, (&y, &v)) in g.iter().zip(x).enumerate() {
        if v == NINF {
            assert_eq!(y.to_bits(), 0, "{what}: masked entry {i} is {y}, not 0");
        }
    }
}

#[test]
fn masked_softmax_matches_cpu_ref() {
    let e = engine();
    for len in [3usize, 7, 255, 256, 257, 1000, 5000] {
        let x = masked_rows(len as u64, len);
        check_values(e, &x, &[5, len], &format!("masked softmax L = {len}"));
    }
    // A single entry left unmasked, at each end: it takes all the mass.
    for len in [2usize, 300] {
        for keep in [0, len - 1] {
            let x: Vec<f32> = (0..len)
                .map(|i| if i == keep { 4.0 } else { NINF })
                .collect();
            check_values(e, &x, &[len], &format!("one kept at {keep} of {len}"));
        }
    }
}

#[test]
fn masked_softmax_chunks_and_runs_on_the_cpu_backend() {
    // [100, 80] over a 16 KiB binding limit: three chunks of whole rows.
    let chunked = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    let x = masked_rows(41, 80).repeat(20);
    check_values(&chunked, &x, &[100, 80], "chunked masked softmax");
    check_values(&Engine::cpu(), &x, &[100, 80], "cpu backend masked softmax");
}

/// Asserts `e` gives cpu-ref's error for `x` of `shape`, and returns it.
fn same_error(e: &Engine, x: &[f32], shape: &[usize], what: &str) -> Error {
    let want = cpu_error(cpu::softmax_last(&host(x, shape)));
    assert_eq!(
        gpu_error(e.softmax_last(&up(e, x, shape))),
        want,
        "{what}: GPU and cpu-ref errors differ"
    );
    want
}

#[test]
fn fully_masked_rows_nan_and_pos_inf_give_cpu_ref_errors() {
    let e = gpu_engine();
    for len in [1usize, 7, 256, 257, 1000] {
        // Rows 1 and 3 masked entirely: row 1 is reported at its first index.
        let mut x = values(len as u64, 4 * len, -5.0, 5.0);
        x[len..2 * len].fill(NINF);
        x[3 * len..].fill(NINF);
        let err = same_error(&e, &x, &[4, len], &format!("masked rows, L = {len}"));
        let want = Error::NonFinite {
            op: "softmax_last",
            tensor: cpu::SOFTMAX_MASKED_ROW,
            index: len,
        };
        assert_eq!(err, want, "L = {len}");
        // NaN or +inf in row 2, after the masked row and a masked entry: the bad value is
        // reported, as an input error of "x" at its own index.
        for bad in [f32::NAN, f32::INFINITY] {
            let mut y = x.clone();
            y[2 * len] = NINF;
            y[3 * len - 1] = bad;
            let err = same_error(&e, &y, &[4, len], &format!("{bad} after masks, L = {len}"));
            let want = Error::NonFinite {
                op: "softmax_last",
                tensor: "x",
                index: 3 * len - 1,
            };
            assert_eq!(err, want, "{bad}, L = {len}");
        }
    }
    // Over a small binding limit: a masked row in the last chunk is reported at its index in the
    // full tensor; one in the first chunk loses to a NaN in the last chunk.
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    let (r, c) = (100, 80);
    let mut x = values(7, r * c, -2.0, 2.0);
    x[90 * c..91 * c].fill(NINF);
    let err = same_error(&e, &x, &[r, c], "chunked masked row");
    assert!(matches!(err, Error::NonFinite { index, .. } if index == 90 * c));
    x[c..2 * c].fill(NINF);
    x[95 * c + 3] = f32::NAN;
    let err = same_error(&e, &x, &[r, c], "chunked NaN after a masked row");
    assert!(matches!(err, Error::NonFinite { tensor: "x", index, .. } if index == 95 * c + 3));
}
