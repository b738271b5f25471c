//! The submission thread and future-based reads: reads started back to back are in flight
//! together and complete without the caller polling; futures are `Send + 'static`; a dropped read
//! future loses nothing (its launches' results are still stored in their fates).

use bitnet_tests::{block_on, gpu_engine, gpu_engine_with, random_f32};
use bitnet_wgpu::{EngineOptions, Error};

#[test]
fn many_reads_in_flight_complete_in_any_order() {
    let e = gpu_engine();
    let inputs: Vec<Vec<f32>> = (0..24)
        .map(|i| random_f32(i, 100 + 37 * i as usize, -1.0, 1.0))
        .collect();
    // Record all copies, start every read (each is submitted at once), then await in reverse.
    let futures: Vec<_> = inputs
        .iter()
        .map(|v| {
            let t = e.upload_f32(v, &[v.len()]).unwrap();
            e.copy(&e.copy(&t).unwrap()).unwrap().read_f32_async()
        })
        .collect();
    for (f, v) in futures.into_iter().zip(&inputs).rev() {
        assert_eq!(block_on(f).unwrap(), *v);
    }
}

#[test]
fn read_futures_are_send_and_static_and_await_on_other_threads() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let e = gpu_engine();
    let v = random_f32(5, 4096, -2.0, 2.0);
    let y = e.copy(&e.upload_f32(&v, &[64, 64]).unwrap()).unwrap();
    let f = y.read_f32_async();
    assert_send_static(&f);
    let q = e
        .quantize_activations_tensor(&y)
        .unwrap()
        .read_activations_async();
    let got = std::thread::spawn(move || (block_on(f), block_on(q)))
        .join()
        .unwrap();
    assert_eq!(got.0.unwrap(), v);
    let want = bitnet_wgpu::cpu_ref::quantize_activations(&v, 64, 64).unwrap();
    assert_eq!(got.1.unwrap(), want);
}

#[test]
fn a_dropped_read_future_loses_nothing() {
    let e = gpu_engine();
    let mut v = vec![1.0f32; 256];
    v[77] = f32::INFINITY;
    let y = e.copy(&e.upload_f32(&v, &[256]).unwrap()).unwrap();
    drop(y.read_f32_async()); // submitted, never awaited: the status still lands in y's fate
    let want = Error::NonFinite {
        op: "copy",
        tensor: "x",
        index: 77,
    };
    assert_eq!(y.read_f32().unwrap_err(), want);
    assert_eq!(block_on(y.check_async()).unwrap_err(), want);
    let z = e.fill(&[300], 4.0).unwrap();
    drop(z.read_f32_async());
    assert_eq!(z.read_f32().unwrap(), vec![4.0; 300]);
    e.sync().unwrap();
    assert_eq!(e.pool_stats().live_bytes, 1024 + 1200);
}

#[test]
fn threads_record_and_read_concurrently_with_and_without_idle_submits() {
    for idle_flush in [None, Some(std::time::Duration::from_micros(50))] {
        let e = gpu_engine_with(EngineOptions {
            idle_flush,
            batch_dispatches: 5,
            ..EngineOptions::default()
        });
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let e = &e;
                s.spawn(move || {
                    let mut pending = Vec::new();
                    for i in 0..40u64 {
                        let n = 1 + ((t * 131 + i * 71) % 2000) as usize;
                        let v = random_f32(t * 100 + i, n, -1.0, 1.0);
                        let y = e.copy(&e.upload_f32(&v, &[n]).unwrap()).unwrap();
                        pending.push((y.read_f32_async(), v));
                        if pending.len() == 4 {
                            let (f, v) = pending.remove(0);
                            assert_eq!(block_on(f).unwrap(), v, "thread {t} read {i}");
                        }
                    }
                    for (f, v) in pending {
                        assert_eq!(block_on(f).unwrap(), v);
                    }
                });
            }
        });
        e.sync().unwrap();
        assert_eq!(e.pool_stats().live_bytes, 0);
    }
}
