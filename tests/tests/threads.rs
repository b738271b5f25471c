//! One engine shared by threads: non-finite status attribution is per tensor lineage. Threads
//! feeding NaN/Inf always get their own error (right op, tensor and index); threads computing
//! clean results on the same engine, at the same time, never see an error.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bitnet_tests::{Rng, gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref;
use bitnet_wgpu::{Engine, Error};

/// The engine every thread shares (as the cross-check suite shares one between test threads).
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(gpu_engine)
}

const ROUNDS: usize = 60;

/// A thread that only feeds non-finite values: every result must be its own error.
fn poisoner(t: u64, errors_seen: &AtomicUsize) {
    let e = engine();
    let mut r = Rng::new(100 + t);
    let (n, k) = (6, 700);
    for round in 0..ROUNDS {
        let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][round % 3];
        let mut x = random_f32(t * 1000 + round as u64, n * k, -2.0, 2.0);
        let at = r.below((n * k) as u64) as usize;
        x[at] = bad;
        let ctx = format!("poisoner {t} round {round}");
        // Three paths: the slice API, a resident chain read at its end, and the copy kernel.
        let want = Error::NonFinite {
            op: "quantize_activations",
            tensor: "x",
            index: at,
        };
        assert_eq!(e.quantize_activations(&x, n, k).unwrap_err(), want, "{ctx}");
        let w_want = Error::NonFinite {
            op: "quantize_weights",
            tensor: "w",
            index: at,
        };
        assert_eq!(e.quantize_weights(&x, n, k).unwrap_err(), w_want, "{ctx}");
        let xt = e.upload_f32(&x, &[n, k]).unwrap();
        let copied = e.copy(&xt).unwrap();
        let q = e.quantize_activations_tensor(&xt).unwrap();
        let copy_want = Error::NonFinite {
            op: "copy",
            tensor: "x",
            index: at,
        };
        assert_eq!(q.read_activations().unwrap_err(), want, "{ctx}: resident");
        assert_eq!(copied.read_f32().unwrap_err(), copy_want, "{ctx}: copy");
        errors_seen.fetch_add(4, Ordering::Relaxed);
    }
}

/// A thread computing clean results (including the inputs the H200 run misreported: all
/// subnormal, all zero): every result must equal cpu-ref and never be an error.
fn clean_worker(t: u64) {
    let e = engine();
    for round in 0..ROUNDS {
        let ctx = format!("clean {t} round {round}");
        let (n, k) = (5 + round % 4, 300 + 37 * (t as usize % 3));
        let w = match round % 3 {
            0 => vec![f32::from_bits(1 + round as u32); n * k], // all subnormal
            1 => vec![0.0; n * k],                              // all zero
            _ => random_normal(t * 77 + round as u64, n * k, 0.02),
        };
        let want = cpu_ref::quantize_weights(&w, n, k).unwrap();
        let got = e
            .quantize_weights(&w, n, k)
            .unwrap_or_else(|err| panic!("{ctx}: {err}"));
        assert_eq!(got, want, "{ctx}: weights");
        let x = random_f32(t * 5000 + round as u64, n * k, -3.0, 3.0);
        let want = cpu_ref::quantize_activations(&x, n, k).unwrap();
        let got = e
            .quantize_activations(&x, n, k)
            .unwrap_or_else(|err| panic!("{ctx}: {err}"));
        assert_eq!(got, want, "{ctx}: activations");
        let xt = e.upload_f32(&x, &[n, k]).unwrap();
        let y = e.copy(&e.copy(&xt).unwrap()).unwrap();
        assert_eq!(y.read_f32().unwrap_or_else(|err| panic!("{ctx}: {err}")), x);
    }
}

#[test]
fn nan_feeders_never_poison_other_threads_results() {
    let errors_seen = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..3 {
            let errors_seen = &errors_seen;
            s.spawn(move || poisoner(t, errors_seen));
        }
        for t in 0..3 {
            s.spawn(move || clean_worker(t));
        }
    });
    assert_eq!(errors_seen.load(Ordering::Relaxed), 3 * ROUNDS * 4);
    engine().sync().unwrap();
}

#[test]
fn a_flag_poisons_exactly_the_tensors_computed_from_it() {
    let e = gpu_engine();
    let mut v = vec![1.0f32; 64];
    v[9] = f32::NAN;
    let bad = e.upload_f32(&v, &[1, 64]).unwrap();
    let good = e.upload_f32(&[2.0; 64], &[1, 64]).unwrap();
    let flagged = e.copy(&bad).unwrap();
    // A sibling recorded in the same batch, and a descendant of the flagged launch.
    let sibling = e.copy(&good).unwrap();
    let descendant = e.fill(&[64], 0.0).unwrap(); // independent launch
    let chained = e.quantize_activations_tensor(&flagged.clone()).unwrap();
    let want = Error::NonFinite {
        op: "copy",
        tensor: "x",
        index: 9,
    };
    // The descendant reports the earliest failure of its chain (the copy), not its own op.
    assert_eq!(chained.read_activations().unwrap_err(), want);
    assert_eq!(sibling.read_f32().unwrap(), vec![2.0; 64]);
    assert_eq!(descendant.read_f32().unwrap(), vec![0.0; 64]);
    assert_eq!(flagged.read_f32().unwrap_err(), want);
    // Launching from a tensor known to be poisoned fails at once with the same error.
    assert_eq!(e.copy(&flagged).unwrap_err(), want);
}
