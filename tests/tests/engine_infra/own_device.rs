//! Engines on a device the application owns (`Engine::from_device`): two engines on one device
//! both hear its loss, and a device below the limits the kernels need is refused up front.

use std::time::{Duration, Instant};

use bitnet_tests::{own_device, random_f32};
use bitnet_wgpu::{Engine, Error, cpu_ref, wgpu};

/// Waits until `e` has seen its device lost (wgpu reports a loss from a later poll).
fn sees_loss(e: &Engine) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !e.info().device_lost && Instant::now() < deadline {
        let _ = e.sync();
        std::thread::sleep(Duration::from_millis(1));
    }
    e.info().device_lost
}

/// wgpu keeps one lost callback per device: the second engine's used to replace the first's,
/// which then never learned of the loss (reads failed as map errors after their timeouts, syncs
/// passed, every op tried the GPU first).
#[test]
fn two_engines_on_one_device_both_see_its_loss() {
    let (adapter, device, queue) =
        own_device("two engines, one device", |a| (a.features(), a.limits()));
    let first = Engine::from_device(&adapter, device.clone(), queue.clone()).unwrap();
    let second = Engine::from_device(&adapter, device.clone(), queue).unwrap();
    let x = first.upload_f32(&[1.0, -2.0, 3.0], &[3]).unwrap();
    assert_eq!(x.read_f32().unwrap(), [1.0, -2.0, 3.0]);
    device.destroy();
    for (name, e) in [("first", &first), ("second", &second)] {
        assert!(sees_loss(e), "the {name} engine never saw the loss");
        assert!(
            matches!(e.sync(), Err(Error::DeviceLost(_))),
            "{name}: {:?}",
            e.sync()
        );
        // Host-facing ops run on the CPU from then on, with cpu-ref's bits.
        let w = random_f32(5, 8 * 16, -1.0, 1.0);
        assert_eq!(
            e.quantize_weights(&w, 8, 16).unwrap(),
            cpu_ref::quantize_weights(&w, 8, 16).unwrap(),
            "{name}"
        );
    }
    assert!(matches!(x.read_f32(), Err(Error::DeviceLost(_))));
}

/// An engine dropped from a shared device leaves the other one hearing the device: its loss
/// still reaches the engine that remains.
#[test]
fn an_engine_dropped_from_a_shared_device_leaves_the_other_hearing_it() {
    let (adapter, device, queue) =
        own_device("one of two engines dropped", |a| (a.features(), a.limits()));
    let first = Engine::from_device(&adapter, device.clone(), queue.clone()).unwrap();
    let second = Engine::from_device(&adapter, device.clone(), queue).unwrap();
    drop(first);
    let x = second.upload_f32(&[4.0], &[1]).unwrap();
    assert_eq!(x.read_f32().unwrap(), [4.0]);
    device.destroy();
    assert!(sees_loss(&second));
}

/// Devices of two `wgpu::Instance`s compare equal in wgpu (their ids are numbered per instance):
/// each engine hears its own device only (a registry keyed by device equality had merged them:
/// one device's loss marked the other's engine lost, and the other's loss went unheard).
#[test]
fn engines_on_devices_of_two_instances_hear_their_own_device_only() {
    let (a1, d1, q1) = own_device("instance one", |a| (a.features(), a.limits()));
    let (a2, d2, q2) = own_device("instance two", |a| (a.features(), a.limits()));
    let e1 = Engine::from_device(&a1, d1.clone(), q1).unwrap();
    let e2 = Engine::from_device(&a2, d2.clone(), q2).unwrap();
    d1.destroy();
    assert!(sees_loss(&e1));
    let x = e2.upload_f32(&[5.0, 6.0], &[2]).unwrap();
    assert_eq!(x.read_f32().unwrap(), [5.0, 6.0]);
    assert!(
        !e2.info().device_lost,
        "the other instance's device is healthy"
    );
    d2.destroy();
    assert!(sees_loss(&e2));
}

/// An engine made on a device already lost (after another engine saw the loss) learns it too.
#[test]
fn an_engine_made_on_a_lost_device_learns_it() {
    let (adapter, device, queue) =
        own_device("made after the loss", |a| (a.features(), a.limits()));
    let first = Engine::from_device(&adapter, device.clone(), queue.clone()).unwrap();
    device.destroy();
    assert!(sees_loss(&first));
    let late = Engine::from_device(&adapter, device.clone(), queue).unwrap();
    assert!(sees_loss(&late));
    assert!(matches!(late.sync(), Err(Error::DeviceLost(_))));
}

/// A device with WebGPU's downlevel limits (4 storage buffers per stage) cannot bind most
/// kernels: refused when the engine is made, naming the limit, where every op failed one by one
/// as a pipeline fault.
#[test]
fn a_device_below_webgpu_default_limits_is_refused() {
    let (adapter, device, queue) = own_device("downlevel limits", |_| {
        (wgpu::Features::empty(), wgpu::Limits::downlevel_defaults())
    });
    match Engine::from_device(&adapter, device, queue) {
        Err(Error::LimitExceeded {
            limit: "max_storage_buffers_per_shader_stage",
            requested: 8,
            max: 4,
            ..
        }) => {}
        other => panic!("{:?}", other.map(|e| e.info().adapter_name)),
    }
}
