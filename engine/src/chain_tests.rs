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

/// A host input runs linear by linear without building the chain's arenas (a second copy of
/// every weight, and an allocation that could fail a run that needs none).
#[test]
fn a_host_input_builds_no_arenas() {
    let e = crate::test_gpu::gpu_with(EngineOptions::default());
    let w = |n: usize, seed: u64| {
        let v: Vec<f32> = (0..n * 64)
            .map(|i| ((i as u64 * 5 + seed) % 7) as f32 - 3.0)
            .collect();
        Linear::new(&e, bitnet_cpu_ref::quantize_weights(&v, n, 64).unwrap())
    };
    let links = vec![
        (w(64, 3), ChainInput::Input),
        (w(8, 4), ChainInput::Output(0)),
    ];
    for (l, _) in &links {
        l.device_weights().unwrap();
    }
    let chain = e.linear_chain(64, links).unwrap();
    e.set_dispatch_policy(crate::dispatch::DispatchPolicy::Cpu)
        .unwrap();
    let x = e.upload_f32(&[0.25; 64], &[64]).unwrap();
    e.set_dispatch_policy(crate::dispatch::DispatchPolicy::Gpu)
        .unwrap();
    e.sync().unwrap();
    let before = e.pool_stats().live_bytes;
    let got = chain.forward_tensor(&x).unwrap().read_all().unwrap();
    e.sync().unwrap();
    assert!(
        chain.inner.device.lock().unwrap().is_none(),
        "no arenas for a host input"
    );
    assert!(e.pool_stats().live_bytes <= before);
    assert_eq!(got, chain.forward(&[0.25; 64]).unwrap());
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

/// Where a 4-row block has fewer lanes than a subgroup (the default 32 lanes on 64-lane AMD or
/// Adreno subgroups) a subgroup holds several blocks' outputs, and the absmax a producer
/// publishes must cover them all, not only one block's: otherwise its consumer quantizes with
/// too small a scale and clamps. Blocks of half the test device's smallest subgroup, the
/// linears' largest outputs in a subgroup's first and second blocks, checked against cpu-ref; both
/// forms of the chain kernel (coherent outputs where the device has them, atomic).
#[test]
fn blocks_narrower_than_a_subgroup_publish_every_outputs_absmax() {
    let atomic = EngineOptions {
        disabled_features: wgpu::Features::MEMORY_DECORATION_COHERENT,
        ..EngineOptions::default()
    };
    narrow_blocks_match_cpu_ref(crate::test_gpu::gpu());
    narrow_blocks_match_cpu_ref(crate::test_gpu::gpu_with(atomic));
}

fn narrow_blocks_match_cpu_ref(e: Engine) {
    let gpu = e.gpu_context().expect("a GPU engine");
    // Four lanes at least (the kernel's limit): on 4-lane subgroups blocks fill them.
    let lanes = (gpu.caps.subgroup_min_size / 2).max(4);
    // Weights of 0 and 1 on a positive input: every output is positive, and row `hot`, all
    // ones, has the largest (the others are a third ones).
    let w = |n: usize, k: usize, hot: usize| {
        let v: Vec<f32> = (0..n * k)
            .map(|i| f32::from(i / k == hot || (i % k + i / k).is_multiple_of(3)))
            .collect();
        Linear::new(&e, bitnet_cpu_ref::quantize_weights(&v, n, k).unwrap())
    };
    // A subgroup's 8 rows are two blocks (rows 8 s .. 8 s + 3 and 8 s + 4 .. 8 s + 7): the
    // largest output in a second block (missed where only a subgroup's lane 0 counted) and in a
    // first block past the workgroup's first (missed where a subgroup's last lane counted; the
    // first block's value is the reduction's start), each read by the next linear.
    let links = vec![
        (w(128, 64, 5), ChainInput::Input),
        (w(64, 128, 10), ChainInput::Output(0)),
        (w(64, 64, 13), ChainInput::Output(1)),
        (w(64, 64, 8), ChainInput::Output(2)),
    ];
    let x: Vec<f32> = (0..64).map(|i| 0.25 + (i % 7) as f32 * 0.125).collect();
    let want = e
        .linear_chain(64, links.clone())
        .unwrap()
        .forward_cpu(&x)
        .unwrap();
    let dev = ChainDevice::with_lanes(&e, gpu, &links, lanes).unwrap();
    let out = e.empty(gpu, OP, &[dev.out_len], DType::F32).unwrap();
    dev.record(gpu, &e.upload_f32(&x, &[64]).unwrap(), &out)
        .unwrap();
    let got = out.read_f32().unwrap();
    for (i, want) in want.iter().enumerate() {
        let at = dev.offsets[i];
        assert_eq!(
            &got[at..at + want.len()],
            &want[..],
            "linear {i} at {lanes} lanes"
        );
    }
}

/// A 4-row block wholly past a linear's last row stores nothing. Below 16 lanes a workgroup's
/// rows reach past a linear's 64-row padding into later linears' outputs, where such blocks
/// once stored zeros — over values already written, once consumers polled the data (lavapipe,
/// 4 lanes: one run in four lost a linear's outputs). Checked where it is deterministic: the
/// coherent form fills the arena before the run, so the padding after an 8-row linear (rows
/// 8 .. 63, reached only by such blocks) must still hold the fill word.
#[test]
fn blocks_past_a_linears_end_store_nothing() {
    let e = crate::test_gpu::gpu();
    let gpu = e.gpu_context().expect("a GPU engine");
    assert!(
        gpu.caps.has(wgpu::Features::MEMORY_DECORATION_COHERENT),
        "the test device declares storage coherent"
    );
    let w = |n: usize, seed: usize| {
        let v: Vec<f32> = (0..n * 64).map(|i| ((i + seed) % 3) as f32 - 1.0).collect();
        Linear::new(&e, bitnet_cpu_ref::quantize_weights(&v, n, 64).unwrap())
    };
    let links = vec![(w(8, 1), ChainInput::Input), (w(64, 2), ChainInput::Input)];
    let x: Vec<f32> = (0..64).map(|i| (i % 5) as f32 - 2.0).collect();
    let dev = ChainDevice::with_lanes(&e, gpu, &links, 4).unwrap();
    let out = e.empty(gpu, OP, &[dev.out_len], DType::F32).unwrap();
    dev.record(gpu, &e.upload_f32(&x, &[64]).unwrap(), &out)
        .unwrap();
    let got: Vec<u32> = out
        .read_f32()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let (first, second) = (dev.offsets[0], dev.offsets[1]);
    assert_eq!(
        second - first,
        64,
        "the 8-row linear's output is padded to 64 words"
    );
    assert!(
        got[first + 8..second]
            .iter()
            .all(|&b| b == bitnet_kernels_wgsl::bitnet::CHAIN_UNWRITTEN),
        "padding after the 8-row linear: {:x?}",
        &got[first + 8..second]
    );
    for (i, (l, _)) in links.iter().enumerate() {
        let want = bitnet_cpu_ref::bitlinear(&x, 1, l.weights()).unwrap();
        let at = dev.offsets[i];
        assert_eq!(
            &got[at..at + want.len()],
            &want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()[..],
            "linear {i}"
        );
    }
}
