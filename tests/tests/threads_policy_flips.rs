//! Ops racing `set_dispatch_policy` on another thread: each lands on one backend or the other,
//! never fails because the policy changed while it ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bitnet_tests::gpu_engine;
use bitnet_wgpu::DispatchPolicy;

/// A `KvCache` append racing policy flips between `Gpu` and `Cpu`: the cache chose the device,
/// then moved the appended rows with the public `to_device`, which checks the policy again and
/// returned `Unsupported` once another thread had set `Cpu` in between (1-18 failures in 300-3000
/// appends). Every append must succeed, and the cache must hold what was appended.
#[test]
fn kv_cache_appends_racing_policy_flips_all_land() {
    let e = gpu_engine();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (e, stop) = (e.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let p = if n % 2 == 0 {
                    DispatchPolicy::Cpu
                } else {
                    DispatchPolicy::Gpu
                };
                e.set_dispatch_policy(p).unwrap();
                std::thread::yield_now();
            }
        })
    };
    // A busy thread, so that the appending thread is preempted mid-append now and then.
    let busy = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };
    let mut cache = e.kv_cache(8, 1, 4).unwrap();
    let mut held: Vec<f32> = Vec::new();
    let mut failed = Vec::new();
    let started = Instant::now();
    for i in 0..3000u32 {
        if cache.len() == cache.capacity() {
            cache.clear();
            held.clear();
        }
        let k = e.upload_f32(&[i as f32; 4], &[1, 1, 4]).unwrap();
        match cache.append(&k, &k) {
            Ok(()) => held.extend([i as f32; 4]),
            Err(err) => failed.push(format!("append {i}: {err}")),
        }
        assert!(started.elapsed() < Duration::from_secs(120), "hung");
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    busy.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(cache.keys().unwrap().read_f32().unwrap(), held);
}
