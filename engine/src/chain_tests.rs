//! Unit tests of `LinearChain` that need the engine's internals.

use super::*;
use crate::engine::EngineOptions;
use crate::fault::InjectedFault;

/// A chain whose fused run was aborted runs linear by linear from then on, and gives its
/// arenas back to the pool: a long-running server does not keep a dead second copy of every
/// weight of the chain.
#[test]
fn an_aborted_chain_releases_its_arenas() {
    let e = crate::test_gpu::gpu_with(EngineOptions::default());
    let w = |n: usize, seed: u64| {
        let v: Vec<f32> = (0..n * 64)
            .map(|i| ((i as u64 * 7 + seed) % 5) as f32 - 2.0)
            .collect();
        Linear::new(&e, bitnet_cpu_ref::quantize_weights(&v, n, 64).unwrap())
    };
    let links = vec![
        (w(64, 1), ChainInput::Input),
        (w(8, 2), ChainInput::Output(0)),
    ];
    let layer_bytes: u64 = links
        .iter()
        .map(|(l, _)| l.device_weights().unwrap().byte_size())
        .sum();
    let chain = e.linear_chain(64, links).unwrap();
    let x = vec![0.5; 64];
    let want = chain.forward(&x).unwrap();
    assert!(chain.is_fused(), "the chain kernel runs here");
    e.sync().unwrap();
    let fused = e.pool_stats().live_bytes;
    e.inject_fault(InjectedFault::WaitAbort);
    assert_eq!(chain.forward(&x).unwrap(), want);
    assert!(!chain.is_fused());
    e.sync().unwrap();
    let unfused = e.pool_stats().live_bytes;
    assert!(
        unfused <= layer_bytes,
        "after the abort {unfused} live bytes (fused: {fused}), the layers' weights are {layer_bytes}"
    );
}

/// A fused run that flagged a non-finite value is run again linear by linear once, and every
/// later read uses that run (each read ran the whole chain again before).
#[test]
fn a_flagged_run_is_run_again_once() {
    let e = crate::test_gpu::gpu();
    e.set_dispatch_policy(crate::dispatch::DispatchPolicy::Gpu)
        .unwrap();
    let w = |n: usize, seed: u64, scale: f32| {
        let v: Vec<f32> = (0..n * 64)
            .map(|i| (((i as u64 * 7 + seed) % 5) as f32 - 2.0) * scale)
            .collect();
        Linear::new(&e, bitnet_cpu_ref::quantize_weights(&v, n, 64).unwrap())
    };
    // Inputs near f32::MAX: the second linear's large weight scale overflows its outputs.
    let links = vec![
        (w(8, 1, 0.01), ChainInput::Input),
        (w(8, 2, 50.0), ChainInput::Input),
    ];
    let chain = e.linear_chain(64, links).unwrap();
    let huge: Vec<f32> = (0..64)
        .map(|i| if i % 2 == 0 { 3e38 } else { -3e38 })
        .collect();
    let outs = chain
        .forward_tensor(&e.upload_f32(&huge, &[64]).unwrap())
        .unwrap();
    assert!(chain.is_fused());
    let first = outs.read(0).unwrap();
    assert!(outs.read(1).is_err() && outs.read_all().is_err());
    assert_eq!(outs.read(0).unwrap(), first);
    assert_eq!(outs.reruns.load(Ordering::Relaxed), 1);
}
