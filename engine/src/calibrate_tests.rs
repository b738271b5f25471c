//! Unit tests of calibration: the cache text, its key, and the cost model.

/// A cache file cut short anywhere (a reader racing a writer, a crash) never parses as other
/// values: it parses as the whole calibration or not at all.
#[test]
fn truncated_cache_text_is_rejected() {
    use super::{Calibration, Cost};
    let c = Calibration {
        key: "adapter | Vulkan | drv 1 | bitnet-wgpu 0.1.0 | 2 threads".into(),
        upload_bytes_per_s: 3.5e9,
        download_bytes_per_s: 2.25e9,
        cpu: [Cost {
            fixed_s: 1.5e-6,
            per_unit_s: 2.5e-9,
        }; 4],
        gpu: [Cost {
            fixed_s: 5.5e-5,
            per_unit_s: 1.25e-12,
        }; 4],
    };
    let text = c.to_text();
    assert_eq!(Calibration::from_text(&text), Some(c.clone()));
    for cut in 0..text.len() - 1 {
        let got = Calibration::from_text(&text[..cut]);
        assert!(
            got.is_none() || got == Some(c.clone()),
            "cut {cut}: {got:?}"
        );
    }
    // A token that does not parse rejects the file instead of being skipped.
    let bad = text.replacen("bitlinear_gemv ", "bitlinear_gemv x ", 1);
    assert_eq!(Calibration::from_text(&bad), None);
}

use super::*;

/// A key with a line break (a driver string can hold one) still writes a file whose first
/// line is the whole key: otherwise the file never parses, and every engine calibrates again.
#[test]
fn a_key_with_line_breaks_stays_on_its_line() {
    let c = Calibration {
        key: "adapter | Vulkan | drv 1\nbuild 7\r\n | bitnet-wgpu 0.1.0 | 2 threads".into(),
        upload_bytes_per_s: 3.5e9,
        download_bytes_per_s: 2.25e9,
        cpu: [Cost::default(); 4],
        gpu: [Cost::default(); 4],
    };
    let back = Calibration::from_text(&c.to_text()).expect("the text parses");
    assert_eq!(
        back.key,
        "adapter | Vulkan | drv 1 build 7   | bitnet-wgpu 0.1.0 | 2 threads"
    );
}

/// Engine options that change GPU times change the key: a calibration measured under a
/// binding cap (every op chunked) or another params mode is never served to other engines.
#[test]
fn engine_options_that_change_gpu_times_are_in_the_key() {
    crate::test_gpu::assert_key_follows_engine_options(Calibration::key_of);
}

/// A calibration measured under forced BitLinear plans (`generic_gemv` timed GEMVs 7-14× slower)
/// is keyed apart from the default engines', and the key counts the threads cpu-ref really
/// runs on (rayon's pool, not the machine's cores).
#[test]
fn forced_tuning_and_cpu_ref_threads_are_in_the_key() {
    let e = crate::test_gpu::gpu();
    let g = e.gpu_raw().unwrap();
    let default = Calibration::key_of(g);
    assert!(
        default.contains(&format!("| {} threads |", rayon::current_num_threads())),
        "{default}"
    );
    e.set_bitnet_tuning(crate::BitnetTuning {
        generic_gemv: true,
        ..Default::default()
    });
    let forced = Calibration::key_of(g);
    assert_ne!(forced, default);
    e.set_bitnet_tuning(crate::BitnetTuning::default());
    assert_eq!(Calibration::key_of(g), default);
}

#[test]
fn text_round_trip_and_rejects_garbage() {
    let c = Calibration {
        key: "adapter | Vulkan | drv 1 | bitnet-wgpu 0.1.0 | 2 threads".into(),
        upload_bytes_per_s: 3.5e9,
        download_bytes_per_s: 2.25e9,
        cpu: [Cost {
            fixed_s: 1e-6,
            per_unit_s: 2e-9,
        }; 4],
        gpu: [Cost {
            fixed_s: 5e-5,
            per_unit_s: 1e-12,
        }; 4],
    };
    assert_eq!(Calibration::from_text(&c.to_text()), Some(c.clone()));
    assert_eq!(
        Calibration::from_text("key x\nupload_bytes_per_s nan\n"),
        None
    );
    assert_eq!(Calibration::from_text(""), None);
    let fit = Cost::fit((10.0, 3.0), (20.0, 5.0));
    assert!((fit.per_unit_s - 0.2).abs() < 1e-12 && (fit.fixed_s - 1.0).abs() < 1e-12);
}

/// The GPU fit inverts the prediction: wall times made by a known model (compute cost plus each
/// call's transfers, as `Dispatcher::raw` adds them) fit back to that compute cost for every
/// class. Weight quantization reads back packed ternary (a sixteenth of its f32 input), which
/// the fit once counted as a quarter — a GPU cost below the truth.
#[test]
fn gpu_fit_takes_out_the_transfers_the_prediction_adds() {
    use crate::dispatch::DispatchPolicy;
    use crate::predict::Dispatcher;
    let truth = Cost {
        fixed_s: 5e-5,
        per_unit_s: 1e-9,
    };
    let (up_bw, down_bw) = (2e8, 1e8);
    let d = Dispatcher::new(DispatchPolicy::Auto);
    d.install(Calibration {
        key: "fit test".into(),
        upload_bytes_per_s: up_bw,
        download_bytes_per_s: down_bw,
        cpu: [Cost::default(); 4],
        gpu: [truth; 4],
    });
    let sizes = QUANT_SIZES
        .map(|(class, s)| (class, s.map(|(rows, k)| (rows, 1, k))))
        .into_iter()
        .chain(LINEAR_SIZES);
    for (class, sizes) in sizes {
        let calls = sizes.map(|size| {
            let w = sample(class, size);
            (w, d.raw(&w).1)
        });
        let fit = fit_gpu(calls, up_bw, down_bw);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b;
        assert!(
            close(fit.fixed_s, truth.fixed_s) && close(fit.per_unit_s, truth.per_unit_s),
            "{class:?}: fitted {fit:?}, truth {truth:?}"
        );
    }
}

/// Transfers priced above a call's wall time (bandwidths measured during a stall of the host)
/// still leave the GPU a cost: a hundredth of each call's wall time. The transfers took all of it
/// before, a GPU cost of zero, and `Auto` sent every op of the class to the GPU.
#[test]
fn transfers_priced_above_the_wall_time_leave_a_gpu_cost() {
    let (class, sizes) = QUANT_SIZES[1];
    let calls = sizes.map(|(rows, k)| (sample(class, (rows, 1, k)), 1e-3 * rows as f64));
    // A thousandth of a byte per second: every transfer "takes" far longer than its call.
    let fit = fit_gpu(calls, 1e-3, 1e-3);
    for (w, wall) in calls {
        let predicted = fit.seconds(w.units() as f64);
        assert!(
            (predicted - 0.01 * wall).abs() <= 1e-9 * wall,
            "{class:?} {w:?}: {predicted} s predicted for a {wall} s call"
        );
    }
}

/// Pool requests of `e` so far: every GPU-resident tensor comes from the pool, a host one never.
fn pool_requests(e: &crate::Engine) -> u64 {
    let s = e.pool_stats();
    s.hits + s.misses
}

/// Measuring times the GPU whatever the policy says meanwhile. `calibrate` checks the policy
/// once, before measuring; a `set_dispatch_policy(Cpu)` from another thread after that check
/// used to turn every later "GPU" run into a cpu-ref run (uploads made host tensors, the ops took
/// their CPU paths), and that model was installed and cached as the GPU's.
#[test]
fn measuring_times_the_gpu_whatever_the_policy() {
    use crate::dispatch::DispatchPolicy;
    let e = crate::test_gpu::gpu();
    let g = e.gpu_raw().expect("a GPU engine");
    // As if another thread switched to Cpu right after `calibrate` checked the policy.
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let before = pool_requests(&e);
    let c = measure(&e, g).expect("measuring succeeds");
    // 4 classes × 2 sizes × (1 warm-up + 3 timed) GPU calls, each uploading its input.
    let served = pool_requests(&e) - before;
    assert!(served >= 32, "the pool served {served} requests");
    assert!(c.invalid().is_none(), "{c:?}");
    assert_eq!(
        e.dispatch_policy(),
        DispatchPolicy::Cpu,
        "the policy is kept"
    );
}

/// A device lost while measuring fails the measurement. Once lost, new tensors are host tensors
/// and the ops take their CPU paths, so the remaining "GPU" runs timed cpu-ref: that model was
/// installed and written to the calibration cache as this adapter's, for every later process.
#[test]
fn a_device_lost_while_measuring_fails_the_measurement() {
    let e = crate::test_gpu::gpu();
    let g = e.gpu_raw().expect("a GPU engine");
    let got = measure_with(&e, g, |class| {
        if class == OpClass::LinearGemv {
            e.inject_fault(crate::InjectedFault::DeviceLost);
            // The engine has seen the loss before the next "GPU" run. wgpu runs the lost
            // callback from a later poll (whichever thread polls): on a loaded CI machine a
            // sync right away could still find the device healthy, so wait for it (bounded).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !g.is_lost() && std::time::Instant::now() < deadline {
                let _ = g.device.poll(wgpu::PollType::Poll);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(matches!(e.sync(), Err(crate::Error::DeviceLost(_))));
        }
    });
    assert!(matches!(got, Err(crate::Error::DeviceLost(_))), "{got:?}");
}

/// A cache file that holds no calibration for the key — empty, garbage, cut short, a NaN or
/// negative cost, another key — is ignored and logged; a missing file is not a bad one. Before,
/// a bad file was replaced without a word.
#[test]
fn bad_cache_files_are_ignored_and_logged() {
    let dir = std::env::temp_dir().join(format!("bitnet-calibration-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = "adapter | Vulkan | drv 1 | bitnet-wgpu 0.1.0 | 2 threads";
    let good = Calibration {
        key: key.into(),
        upload_bytes_per_s: 3.5e9,
        download_bytes_per_s: 2.25e9,
        cpu: [Cost::default(); 4],
        gpu: [Cost::default(); 4],
    }
    .to_text();
    let logged = |path: &std::path::Path| {
        let name = path.display().to_string();
        crate::cache_file::tests::warnings()
            .iter()
            .any(|w| w.contains(&name))
    };
    crate::cache_file::tests::warnings();
    let missing = dir.join("missing.txt");
    assert_eq!(load_from(&missing, key), None);
    assert!(!logged(&missing));
    let bad = [
        String::new(),
        "{\"key\": 1}\n".into(),
        good[..good.len() / 2].into(),
        good.replacen("bitlinear_gemv 0", "bitlinear_gemv NaN", 1),
        good.replacen("bitlinear_gemv 0", "bitlinear_gemv -1", 1),
        good.replacen(
            "upload_bytes_per_s 3500000000",
            "upload_bytes_per_s 1e999",
            1,
        ),
        good.replacen("drv 1", "drv 2", 1),
    ];
    for (i, text) in bad.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.txt"));
        std::fs::write(&path, text).unwrap();
        assert_eq!(load_from(&path, key), None, "{text:?}");
        assert!(logged(&path), "{text:?} was not logged");
    }
    let path = dir.join("good.txt");
    std::fs::write(&path, &good).unwrap();
    assert!(load_from(&path, key).is_some());
    assert!(!logged(&path));
    std::fs::remove_dir_all(&dir).unwrap();
}
