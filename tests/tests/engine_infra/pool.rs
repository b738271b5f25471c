//! Buffer pool and pipeline cache: reuse, statistics back to baseline, bounded overhead, no
//! buffer or pipeline created per call in steady state.

use bitnet_tests::{gpu_engine, random_f32};

#[test]
fn pool_reuses_buffers_and_returns_to_baseline() {
    let e = gpu_engine();
    let base = e.pool_stats();
    assert_eq!((base.live_bytes, base.allocated_bytes), (0, 0));
    {
        let a = e.upload_f32(&[1.0; 1000], &[1000]).unwrap();
        let s = e.pool_stats();
        assert_eq!((s.live_bytes, s.live_buffers, s.misses), (4000, 1, 1));
        assert_eq!(s.in_use_bytes, bitnet_wgpu::size_class(4000));
        drop(a);
    }
    let s = e.pool_stats();
    assert_eq!((s.live_bytes, s.live_buffers), (0, 0));
    assert_eq!(
        s.allocated_bytes,
        bitnet_wgpu::size_class(4000),
        "the buffer stays cached"
    );
    // Same size class: served from the free list.
    let b = e.upload_f32(&[2.0; 990], &[990]).unwrap();
    let s2 = e.pool_stats();
    assert_eq!((s2.hits, s2.misses), (s.hits + 1, s.misses));
    assert_eq!(b.read_f32().unwrap(), vec![2.0; 990]);
    drop(b);
    e.trim_pool();
    let end = e.pool_stats();
    assert_eq!(
        (
            end.live_bytes,
            end.allocated_bytes,
            end.in_use_bytes,
            end.staging_bytes
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn pool_peak_over_live_ratio_on_a_chained_workload() {
    let e = gpu_engine();
    let mut live = Vec::new();
    for step in 0..60usize {
        let n = 1000 + (step * 7919) % 50_000;
        let x = e
            .upload_f32(&random_f32(step as u64, n, -1.0, 1.0), &[n])
            .unwrap();
        let y = e.copy(&e.copy(&x).unwrap()).unwrap();
        live.push(y);
        if live.len() > 8 {
            live.remove(0);
        }
    }
    let last = live.last().unwrap().read_f32().unwrap();
    assert!(last.iter().all(|v| v.is_finite()));
    let s = e.pool_stats();
    let ratio = s.peak_ratio().unwrap();
    println!("pool: {s:?}\npeak allocated / peak live = {ratio:.3}");
    assert!(
        ratio <= 1.5,
        "peak pool bytes / live tensor bytes = {ratio}"
    );
    drop(live);
    e.trim_pool();
    assert_eq!(e.pool_stats().allocated_bytes, 0);
}

#[test]
fn pipelines_compile_once() {
    let e = gpu_engine();
    let x = e.upload_f32(&[1.0; 10], &[10]).unwrap();
    let _ = e.copy(&x).unwrap();
    let first = e.pipeline_stats();
    for _ in 0..5 {
        let _ = e.copy(&x).unwrap();
    }
    let after = e.pipeline_stats();
    assert_eq!(after.compiled, first.compiled, "no recompilation");
    assert_eq!(after.hits, first.hits + 5);
}

#[test]
fn steady_state_creates_no_buffers() {
    // A decode-like loop with fixed shapes: after the first iteration every buffer is reused.
    let e = gpu_engine();
    let step = |i: u64| {
        let x = e
            .upload_f32(&random_f32(i, 2560, -1.0, 1.0), &[1, 2560])
            .unwrap();
        let h = e.copy(&e.copy(&x).unwrap()).unwrap();
        let y = e.fill(&[6912], 0.5).unwrap();
        (h.read_f32().unwrap().len(), y.read_f32().unwrap().len())
    };
    step(0);
    let warm = e.pool_stats();
    for i in 1..20 {
        assert_eq!(step(i), (2560, 6912));
    }
    let s = e.pool_stats();
    assert_eq!(
        s.misses, warm.misses,
        "no buffer created after warm-up: {s:?}"
    );
    assert!(s.hits >= warm.hits + 19 * 4);
    println!(
        "steady state: {s:?}, peak ratio {:.3}",
        s.peak_ratio().unwrap()
    );
    assert!(s.peak_ratio().unwrap() <= 1.5);
}
