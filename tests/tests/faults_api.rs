//! GPU faults across the rest of the public API (the host-facing ops are in `faults.rs`): what
//! the layers ([`Linear`], [`LinearChain`](bitnet_wgpu::LinearChain)) and resident tensors give
//! after a fault. A lost device loses only the data whose only copy was on it: whatever the
//! engine keeps on the host stays usable, and results equal cpu-ref bit for bit.

use bitnet_tests::{gpu_engine_with, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{ChainInput, EngineOptions, Error, InjectedFault, Linear, Location};

fn weights(n: usize, k: usize, seed: u64) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.02), n, k).unwrap()
}

/// A layer keeps its host weights, so a lost device does not lose them: after the loss its
/// `device_weights` are host weights (not the dead device copy, which reads as `DeviceLost`),
/// and the tensor ops on them — a chain's `forward_tensor` on a host input, `bitlinear_tensor`
/// — run on the CPU with cpu-ref's bits.
#[test]
fn layers_keep_their_weights_usable_after_a_lost_device() {
    let e = gpu_engine_with(EngineOptions::default());
    let links = vec![
        (Linear::new(&e, weights(64, 64, 1)), ChainInput::Input),
        (Linear::new(&e, weights(8, 64, 2)), ChainInput::Output(0)),
    ];
    let chain = e.linear_chain(64, links.clone()).unwrap();
    let x = random_f32(3, 64, -1.0, 1.0);
    let first = cpu_ref::bitlinear(&x, 1, links[0].0.weights()).unwrap();
    let second = cpu_ref::bitlinear(&first, 1, links[1].0.weights()).unwrap();
    let want = vec![first.clone(), second];
    assert_eq!(chain.forward(&x).unwrap(), want);
    // The weights are resident: their device copies exist before the loss.
    for (l, _) in &links {
        assert_eq!(l.device_weights().unwrap().location(), Location::Device);
    }
    e.inject_fault(InjectedFault::DeviceLost);
    assert!(matches!(e.sync(), Err(Error::DeviceLost(_))));
    let w = links[0].0.device_weights().unwrap();
    assert_eq!(&w.read_ternary().unwrap(), links[0].0.weights());
    let host = e.upload_f32(&x, &[64]).unwrap();
    assert_eq!(host.location(), Location::Host);
    let y = e
        .bitlinear_tensor(&host.reshape(&[1, 64]).unwrap(), &w)
        .unwrap();
    assert_eq!(y.read_f32().unwrap(), first);
    let outs = chain.forward_tensor(&host).unwrap();
    assert_eq!(outs.read_all().unwrap(), want);
    assert_eq!(chain.forward(&x).unwrap(), want);
}

/// A panic on the submission thread before it changed anything — here at the flush of a read —
/// fails that read (`Error::Panicked`, the call it hit) and nothing else: the read's commands
/// never ran, so the tensor keeps its bytes and its launch's non-finite flag, and the next read
/// returns them. (A read must not leave the launch failed for good as a "lost read-back".)
#[test]
fn a_read_whose_flush_panics_loses_neither_bytes_nor_flags() {
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None, // deterministic: the injected panic hits the read's own flush
        ..EngineOptions::default()
    });
    let v = random_f32(1, 4096, -1.0, 1.0);
    let x = e.upload_f32(&v, &[1, 4096]).unwrap();
    let y = e.copy(&x).unwrap();
    let mut bad = v.clone();
    bad[7] = f32::NAN;
    let q = e
        .quantize_activations_tensor(&e.upload_f32(&bad, &[1, 4096]).unwrap())
        .unwrap();
    e.sync().unwrap(); // both launches ran; their flags wait in their status slots
    e.inject_fault(InjectedFault::JobPanic);
    let r = y.read_f32();
    assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    assert_eq!(y.read_f32().unwrap(), v);
    e.inject_fault(InjectedFault::JobPanic);
    let r = q.check();
    assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    let flagged = Error::NonFinite {
        op: "quantize_activations",
        tensor: "x",
        index: 7,
    };
    assert_eq!(q.read_activations().unwrap_err(), flagged);
    e.sync().unwrap();
}

/// `to_device` on an engine whose device is lost reports the lost device, as every other use of
/// the device does — not `Unsupported` naming "the CPU engine", which this engine is not.
#[test]
fn to_device_after_a_lost_device_reports_the_loss() {
    let e = gpu_engine_with(EngineOptions::default());
    e.inject_fault(InjectedFault::DeviceLost);
    assert!(matches!(e.sync(), Err(Error::DeviceLost(_))));
    let host = e.upload_f32(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(host.location(), Location::Host);
    assert_eq!(host.read_f32().unwrap(), vec![1.0, 2.0]);
    let r = e.to_device(&host);
    assert!(matches!(r, Err(Error::DeviceLost(_))), "{r:?}");
}

/// A lost device's error says why, even when the driver's message is empty (a destroyed device
/// reports none): a bare `DeviceLost("")` tells an operator nothing.
#[test]
fn a_lost_device_error_says_why() {
    let e = gpu_engine_with(EngineOptions::default());
    let x = e.upload_f32(&[1.0, 2.0], &[2]).unwrap();
    e.inject_fault(InjectedFault::DeviceLost);
    for r in [e.sync(), x.read_f32().map(drop), e.to_device(&x).map(drop)] {
        match r {
            Err(Error::DeviceLost(why)) => assert!(!why.trim().is_empty(), "empty reason"),
            other => panic!("expected DeviceLost, got {other:?}"),
        }
    }
}

/// `stream_upload` on an engine whose device is lost reports the lost device, as `to_device`
/// does — not `Unsupported` saying it "needs a GPU engine", which this engine is.
#[test]
fn stream_upload_after_a_lost_device_reports_the_loss() {
    let e = gpu_engine_with(EngineOptions::default());
    e.inject_fault(InjectedFault::DeviceLost);
    assert!(matches!(e.sync(), Err(Error::DeviceLost(_))));
    let r = e.stream_upload([&[1.0f32, 2.0][..]]);
    assert!(matches!(r, Err(Error::DeviceLost(_))), "{r:?}");
}

/// On a device the application shares (`Engine::from_device`), the application's own map
/// callbacks run on whichever thread polls, the engine's completion thread included. One that
/// panics must not stop that thread (every read still waiting would then wait for a poll that
/// never came, or fail as if the device were lost), nor leave the staging buffers of the reads
/// whose callbacks wgpu dropped with it mapped in the pool (each would fail every read drawing
/// it). Reads beside the panics may fail with a typed error; every read after them is exact.
#[test]
fn a_panicking_application_callback_stops_no_engine_thread() {
    let (adapter, device, queue) = bitnet_wgpu::open_gpu_device().unwrap();
    let e = bitnet_wgpu::Engine::from_device(&adapter, device.clone(), queue).unwrap();
    let x = random_f32(9, 4096, -1.0, 1.0);
    let t = e.upload_f32(&x, &[4096]).unwrap();
    for round in 0..20 {
        let buf = device.create_buffer(&bitnet_wgpu::wgpu::BufferDescriptor {
            label: Some("application buffer"),
            size: 256,
            usage: bitnet_wgpu::wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        buf.slice(..)
            .map_async(bitnet_wgpu::wgpu::MapMode::Read, move |_| {
                panic!("application callback {round}")
            });
        // Copies in flight while the callback fires, on whichever engine thread polls first.
        let copies: Vec<_> = (0..4).map(|_| e.copy(&t).unwrap()).collect();
        for c in copies {
            match c.read_f32() {
                Ok(v) => assert_eq!(v, x, "round {round}"),
                Err(err) => assert!(
                    matches!(err, Error::Panicked(_) | Error::Map(_)),
                    "round {round}: {err:?}"
                ),
            }
        }
    }
    for _ in 0..8 {
        assert_eq!(e.copy(&t).unwrap().read_f32().unwrap(), x);
    }
}
