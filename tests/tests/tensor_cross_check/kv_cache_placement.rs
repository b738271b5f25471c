//! `KvCache` placement: the cache follows the engine between device and host (a move back to
//! the device waits until its copy is known good), outlives a lost device, and is checked
//! against the device only while the engine takes GPU work.

use bitnet_tests::{gpu_engine_with, lose_device};
use bitnet_wgpu::{DispatchPolicy, Engine, EngineOptions, Error, Location};

use super::common::{bits, up};
use super::kv_cache::{DIM, HEADS, append, read, step};

/// Host operands go into a device cache, and the cache follows the policy: to the host under
/// `Cpu`, back to the device after.
#[test]
fn the_cache_follows_the_engine_between_device_and_host() {
    let e = gpu_engine_with(EngineOptions::default());
    let mut c = e.kv_cache(8, HEADS, DIM).unwrap();
    let cpu = Engine::cpu();
    let (k1, v1) = step(20, 2);
    // Host tensors of the same engine: under Cpu, uploads are host tensors.
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let (hk, hv) = (up(&e, &k1, &[2, HEADS, DIM]), up(&e, &v1, &[2, HEADS, DIM]));
    assert_eq!(hk.location(), Location::Host);
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    c.append(&hk, &hv).unwrap();
    assert_eq!(c.location(), Location::Device);

    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let (k2, v2) = step(21, 1);
    append(&e, &mut c, &k2, &v2);
    assert_eq!(c.location(), Location::Host);
    assert_eq!(c.keys().unwrap().location(), Location::Host);

    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let (k3, v3) = step(22, 3);
    append(&e, &mut c, &k3, &v3);
    assert_eq!(c.location(), Location::Device);
    let (gk, gv) = read(&c);
    assert_eq!(bits(&gk), bits(&[k1, k2, k3].concat()));
    assert_eq!(bits(&gv), bits(&[v1, v2, v3].concat()));

    // Another engine's tensors are refused.
    let (k, v) = step(23, 1);
    let (ck, cv) = (
        up(&cpu, &k, &[1, HEADS, DIM]),
        up(&cpu, &v, &[1, HEADS, DIM]),
    );
    assert!(matches!(
        c.append(&ck, &cv),
        Err(Error::EngineMismatch { .. })
    ));
}

/// After a device loss an empty cache — cleared, or never appended to — holds nothing to lose:
/// under every policy it goes on as a host cache, and appends to it read back exactly.
#[test]
fn an_empty_cache_outlives_a_lost_device() {
    for policy in [
        DispatchPolicy::Auto,
        DispatchPolicy::Gpu,
        DispatchPolicy::Cpu,
    ] {
        let e = gpu_engine_with(EngineOptions::default());
        let mut cleared = e.kv_cache(4, HEADS, DIM).unwrap();
        let (k, v) = step(55, 2);
        append(&e, &mut cleared, &k, &v);
        assert_eq!(cleared.location(), Location::Device);
        let mut fresh = e.kv_cache(4, HEADS, DIM).unwrap();
        lose_device(&e);
        e.set_dispatch_policy(policy).unwrap();
        cleared.clear();
        let (k, v) = step(56, 1);
        for c in [&mut cleared, &mut fresh] {
            append(&e, c, &k, &v);
            assert_eq!(c.location(), Location::Host, "{policy:?}");
            let (gk, gv) = read(c);
            assert_eq!((bits(&gk), bits(&gv)), (bits(&k), bits(&v)), "{policy:?}");
        }
    }
}

/// A cache moved back to the device uploads what it held with a copy; a copy whose submission
/// fails (a transient fault: the device stays healthy) fails the append and leaves the cache on
/// the host with every row it held, so a retry moves it. (It used to drop the host rows at once:
/// the views then read the fault, never stale bytes, but the rows were lost for good.)
#[test]
fn a_failed_move_to_the_device_keeps_the_rows_on_the_host() {
    let e = gpu_engine_with(EngineOptions::default());
    let mut c = e.kv_cache(8, HEADS, DIM).unwrap();
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let (k1, v1) = step(70, 2);
    append(&e, &mut c, &k1, &v1);
    assert_eq!(c.location(), Location::Host);
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    // The next dispatch is the copy of the held keys and values into the device cache (one
    // launch for both sides).
    e.inject_fault(bitnet_wgpu::InjectedFault::Validation);
    let (k2, v2) = step(71, 1);
    let (gk, gv) = (up(&e, &k2, &[1, HEADS, DIM]), up(&e, &v2, &[1, HEADS, DIM]));
    let r = c.append(&gk, &gv);
    assert!(matches!(r, Err(Error::Validation { .. })), "{r:?}");
    assert_eq!((c.location(), c.len()), (Location::Host, 2));
    let (hk, hv) = read(&c);
    assert_eq!((bits(&hk), bits(&hv)), (bits(&k1), bits(&v1)));
    c.append(&gk, &gv).unwrap();
    assert_eq!(c.location(), Location::Device);
    let (dk, dv) = read(&c);
    assert_eq!(bits(&dk), bits(&[k1, k2].concat()));
    assert_eq!(bits(&dv), bits(&[v1, v2].concat()));
}

/// A cache made under `Cpu` is a host cache and is not checked against the device: one larger
/// than any device buffer is made and grows on the host, and once the engine takes GPU work its
/// move to the device fails each append with `LimitExceeded`, the rows kept on the host (the
/// creation docs).
#[test]
fn a_host_cache_past_the_device_limits_stays_on_the_host() {
    let e = gpu_engine_with(EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let huge = 1 << 40;
    assert!(matches!(
        e.kv_cache(huge, HEADS, DIM),
        Err(Error::LimitExceeded { .. })
    ));
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let mut c = e.kv_cache(huge, HEADS, DIM).unwrap();
    let (k1, v1) = step(72, 2);
    append(&e, &mut c, &k1, &v1);
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let (k2, v2) = step(73, 1);
    for _ in 0..2 {
        let r = c.append(
            &up(&e, &k2, &[1, HEADS, DIM]),
            &up(&e, &v2, &[1, HEADS, DIM]),
        );
        assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
        assert_eq!((c.location(), c.len()), (Location::Host, 2));
        let (hk, hv) = read(&c);
        assert_eq!((bits(&hk), bits(&hv)), (bits(&k1), bits(&v1)));
    }
}
