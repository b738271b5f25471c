use bitnet_cpu_ref::TernaryMatrix;
use bitnet_cpu_ref::ops::ReduceOp;

use super::*;
use crate::dispatch::DispatchPolicy;
use crate::engine::EngineOptions;
use crate::test_gpu::{gpu, gpu_with};

/// The test device (lavapipe in CI) has subgroups, its layout holds, and engines keep them.
#[test]
fn the_layout_holds_on_the_test_device() {
    let e = gpu();
    let g = e.gpu_context().unwrap();
    assert!(
        g.device.features().contains(wgpu::Features::SUBGROUP),
        "{} has no subgroups: the subgroup kernels go untested",
        g.adapter_info.name
    );
    assert_eq!(probe(&g.device, &g.queue, 0), Verdict::Holds);
    assert!(e.info().features.contains(wgpu::Features::SUBGROUP));
}

/// Layouts a driver could get wrong, simulated on a device that gets them right: each is
/// reported with what broke.
#[test]
fn broken_layouts_are_caught() {
    let e = gpu();
    let g = e.gpu_context().unwrap();
    // Lanes numbered one off from the shuffle's lane order: still a bijection.
    match probe(&g.device, &g.queue, 1) {
        Verdict::Broken(why) => assert!(why.contains("a shuffle reaching another lane"), "{why}"),
        other => panic!("lanes one off: {other:?}"),
    }
    // Lanes numbered in reverse: every butterfly mask still pairs the right lanes, only a
    // shuffle by absolute lane sees it.
    match probe(&g.device, &g.queue, 3) {
        Verdict::Broken(why) => assert!(why.contains("a shuffle reaching another lane"), "{why}"),
        other => panic!("lanes reversed: {other:?}"),
    }
    // One invocation per subgroup naming the next subgroup (as a derived id can).
    match probe(&g.device, &g.queue, 2) {
        Verdict::Broken(why) => assert!(why.contains("different subgroup ids"), "{why}"),
        other => panic!("ids off: {other:?}"),
    }
}

/// The verdict on read-back words: a number taken twice (and so another never) is named, and a
/// wrong length is no verdict on the layout.
#[test]
fn check_names_a_number_taken_twice() {
    let mut words = vec![0u32; GROUPS * (WG + 1)];
    for block in words.chunks_exact_mut(WG + 1) {
        block[..WG].fill(1);
    }
    assert_eq!(check(&words), Verdict::Holds);
    let g = 3 * (WG + 1);
    words[g + 5] = 2;
    words[g + 6] = 0;
    match check(&words) {
        Verdict::Broken(why) => assert!(why.contains("workgroup 3") && why.contains("number 5")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(check(&words[1..]), Verdict::Unverified(_)));
    assert_eq!(
        describe_flags(8 | 16),
        "a partial subgroup, a subgroup size that is no power of two in 4 ..= 128"
    );
}

/// An engine whose device fails the probe drops `SUBGROUP`: its ops take their
/// workgroup-memory kernels on the GPU (forced to it, so a subgroup kernel chosen anyway would
/// fail with a missing feature instead of falling back) and match cpu-ref.
#[test]
fn a_device_that_fails_the_probe_runs_without_subgroups_and_stays_exact() {
    FORCED.with(|f| f.set(Some(false)));
    let e = gpu_with(EngineOptions {
        dispatch: DispatchPolicy::Gpu,
        ..EngineOptions::default()
    });
    assert!(!e.info().features.contains(wgpu::Features::SUBGROUP));
    let (n, k) = (96, 512);
    let codes: Vec<i8> = (0..n * k)
        .map(|i| ((i * 7 + i / 5) % 3) as i8 - 1)
        .collect();
    let w = TernaryMatrix::from_i8(&codes, n, k, 0.375).unwrap();
    let wt = e.upload_ternary(&w).unwrap();
    for m in [1, 8, 33] {
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let got = e
            .bitlinear_tensor(&e.upload_f32(&x, &[m, k]).unwrap(), &wt)
            .unwrap()
            .read_f32()
            .unwrap();
        assert_eq!(
            got,
            bitnet_cpu_ref::bitlinear(&x, m, &w).unwrap(),
            "M = {m}"
        );
    }
    let x: Vec<f32> = (0..4 * 1000).map(|i| (i as f32 * 0.11).cos()).collect();
    let got = e
        .reduce_last(ReduceOp::AbsMax, &e.upload_f32(&x, &[4, 1000]).unwrap())
        .unwrap()
        .read_f32()
        .unwrap();
    let want: Vec<f32> = x
        .chunks(1000)
        .map(|r| r.iter().fold(0f32, |a, v| a.max(v.abs())))
        .collect();
    assert_eq!(got, want);
    assert_eq!(e.gpu_context().unwrap().pipelines.stats().failed, 0);
}
