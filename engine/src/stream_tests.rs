//! Tests of streaming (`stream.rs`).

use crate::engine::EngineOptions;
use crate::error::Error;
use crate::tensor::{DType, Storage};

/// An upload whose copy fails — here into a buffer that no longer exists, which the pool
/// hands out as the stream's target; wgpu rejects the copy alone too — is an error, not a
/// success counting bytes that never arrived.
#[test]
fn a_failed_upload_copy_is_an_error() {
    let e = crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        ..Default::default()
    });
    let chunk = vec![1.5f32; 1024];
    let t = e
        .empty(e.gpu_raw().unwrap(), "test", &[chunk.len()], DType::F32)
        .unwrap();
    let Storage::Device(b) = t.data() else {
        panic!("a GPU engine's tensor is on the device");
    };
    b.buffer().destroy();
    drop(t); // back to the pool: the stream's target
    let got = e.stream_upload([&chunk[..]]);
    assert!(matches!(got, Err(Error::Validation { .. })), "{got:?}");
    let other = vec![1.5f32; 4096]; // another size class: a live buffer
    assert!(
        e.stream_upload([&other[..]]).is_ok(),
        "the ring stays usable"
    );
}

/// A chunk routed to the GPU whose device is lost before its input tensor is created (the
/// engine's new tensors are then host tensors) reports the lost device, which re-runs the chunk
/// on the CPU under every policy — not `Unsupported`, which under `Gpu` failed the whole stream.
#[test]
fn a_chunk_whose_device_is_lost_meanwhile_falls_back() {
    let e = crate::test_gpu::gpu_with(EngineOptions::default());
    let g = e.gpu_raw().expect("a GPU engine");
    let staging = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test staging"),
        size: 256,
        usage: wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let w = bitnet_cpu_ref::quantize_weights(&[0.5; 8 * 64], 8, 64).unwrap();
    let w = e.upload_ternary(&w).unwrap();
    e.inject_fault(crate::InjectedFault::DeviceLost);
    assert!(matches!(e.sync(), Err(Error::DeviceLost(_))));
    let got = e.copy_and_compute(g, &staging, 1, 64, &w).map(drop);
    assert!(matches!(got, Err(Error::DeviceLost(_))), "{got:?}");
    assert!(super::falls_back(
        &e,
        &got.unwrap_err(),
        &crate::dispatch::Workload::bitlinear(1, 8, 8, true)
    ));
}

/// A stream upload whose flush job panics before it takes the chunk's copy (an injected job
/// panic) leaves that copy recorded: its staging slot is mapped again only behind the copy's
/// submission. Mapped at once, as it was, the next flush carried a copy out of a mapped buffer:
/// wgpu rejected the whole batch ("still mapped") and every command in it was re-submitted one
/// by one, with a warning.
#[test]
fn a_panicked_upload_flush_does_not_map_a_slot_with_a_recorded_copy() {
    let _ = crate::cache_file::tests::warnings();
    let e = crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        ..Default::default()
    });
    e.set_dispatch_policy(crate::DispatchPolicy::Gpu).unwrap();
    let x = e.upload_f32(&[3.0; 64], &[64]).unwrap();
    e.sync().unwrap();
    let chunk: Vec<f32> = (0..1024).map(|i| i as f32).collect();
    e.inject_fault(crate::fault::InjectedFault::JobPanic);
    let got = e.stream_upload([&chunk[..]]);
    assert!(matches!(got, Err(Error::Panicked(_))), "{got:?}");
    // An unrelated op flushed behind it.
    let y = e.copy(&x).unwrap();
    assert_eq!(y.read_f32().unwrap(), vec![3.0; 64]);
    let logged = crate::cache_file::tests::warnings();
    assert!(
        !logged.iter().any(|w| w.contains("still mapped")),
        "{logged:#?}"
    );
    let chunks: Vec<Vec<f32>> = (0..4).map(|c| vec![c as f32; 1024]).collect();
    let st = e.stream_upload(chunks.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(st.chunks, 4);
}

/// The streams' upload ring, whose slots grow to the largest chunk streamed, shows in the pool
/// stats between streams, and `trim_pool` gives it back (it used to stay for the engine's life,
/// counted nowhere); the next stream makes a new one.
#[test]
fn trim_pool_gives_back_the_upload_ring() {
    let e = crate::test_gpu::gpu_with(EngineOptions::default());
    let chunk = vec![1.0f32; 1 << 20];
    e.stream_upload([&chunk[..], &chunk[..]]).unwrap();
    let held = e.pool_stats().upload_staging_bytes;
    assert!(held >= 4 << 20, "{held}");
    e.trim_pool();
    assert_eq!(e.pool_stats().upload_staging_bytes, 0);
    let st = e.stream_upload([&chunk[..16]]).unwrap();
    assert_eq!(st.chunks, 1);
    assert!(e.pool_stats().upload_staging_bytes < 1 << 20);
}

/// Streamed chunks count in `dispatch_stats` as the ops they are, on the backend each ran on
/// (they were missing, though the dispatch docs count streaming among the dispatched ops).
#[test]
fn streamed_chunks_count_in_the_dispatch_stats() {
    let e = crate::test_gpu::gpu();
    let v: Vec<f32> = (0..16 * 64)
        .map(|i| ((i * 7919) % 13) as f32 - 6.0)
        .collect();
    let w = bitnet_cpu_ref::quantize_weights(&v, 16, 64).unwrap();
    let layer = crate::Linear::new(&e, w);
    let x = vec![0.5f32; 2 * 64];
    let chunks = [&x[..], &x[..], &x[..]];
    for (policy, gpu, cpu) in [
        (crate::DispatchPolicy::Gpu, 3, 0),
        (crate::DispatchPolicy::Cpu, 0, 3),
    ] {
        e.set_dispatch_policy(policy).unwrap();
        let before = e.dispatch_stats();
        e.stream_bitlinear(chunks, &layer, |_, _| Ok(())).unwrap();
        let after = e.dispatch_stats();
        assert_eq!(
            (
                after.gpu_runs - before.gpu_runs,
                after.cpu_runs - before.cpu_runs
            ),
            (gpu, cpu),
            "{policy:?}"
        );
    }
}

/// A streamed chunk submitted to the GPU whose read-back then fails (here an injected validation
/// error of its submission) is re-run on the CPU and counts in `dispatch_stats` as a fallback,
/// as the stream's own stats count it (it counted as a GPU run, counted when submitted).
#[test]
fn a_chunk_failing_at_its_read_counts_as_a_fallback() {
    let e = crate::test_gpu::gpu();
    e.set_dispatch_policy(crate::DispatchPolicy::Gpu).unwrap();
    let v: Vec<f32> = (0..16 * 64)
        .map(|i| ((i * 7919) % 13) as f32 - 6.0)
        .collect();
    let w = bitnet_cpu_ref::quantize_weights(&v, 16, 64).unwrap();
    let layer = crate::Linear::new(&e, w.clone());
    layer.device_weights().unwrap();
    e.sync().unwrap();
    let x = vec![0.5f32; 2 * 64];
    let want = bitnet_cpu_ref::bitlinear(&x, 2, &w).unwrap();
    let chunks = [&x[..], &x[..], &x[..]];
    let before = e.dispatch_stats();
    e.inject_fault(crate::InjectedFault::Validation);
    let st = e
        .stream_bitlinear(chunks, &layer, |_, y| {
            assert_eq!(y, &want[..]);
            Ok(())
        })
        .unwrap();
    let s = e.dispatch_stats();
    eprintln!(
        "stream: gpu_chunks {} cpu_chunks {} fallbacks {}; dispatch_stats delta: gpu_runs {} cpu_runs {} fallbacks {}",
        st.gpu_chunks,
        st.cpu_chunks,
        st.fallbacks,
        s.gpu_runs - before.gpu_runs,
        s.cpu_runs - before.cpu_runs,
        s.fallbacks - before.fallbacks
    );
    assert!(st.fallbacks >= 1, "the injected fault hit a chunk");
    assert_eq!(s.fallbacks - before.fallbacks, st.fallbacks as u64);
    assert_eq!(s.gpu_runs - before.gpu_runs, st.gpu_chunks as u64);
}

/// Under `Auto`, a streamed chunk the device cannot take (a row wider than the binding cap) is
/// remembered as `Engine` ops remember one: every chunk of that shape uploaded, failed and re-ran
/// on the CPU, one fallback per chunk.
#[test]
fn a_chunk_shape_the_device_cannot_take_stays_on_the_cpu() {
    use crate::calibrate::{Calibration, Cost};
    let e = crate::test_gpu::gpu_with(EngineOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    });
    e.set_dispatch_policy(crate::DispatchPolicy::Auto).unwrap();
    let (slow, fast) = (
        Cost {
            fixed_s: 1.0,
            per_unit_s: 1.0,
        },
        Cost {
            fixed_s: 0.0,
            per_unit_s: 0.0,
        },
    );
    e.set_calibration(Calibration {
        key: "stream limit test".into(),
        upload_bytes_per_s: 1e12,
        download_bytes_per_s: 1e12,
        cpu: [slow; 4],
        gpu: [fast; 4],
    })
    .unwrap();
    let (n, k) = (8, 32768); // one row of x: 128 KiB of f32
    let v: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let w = bitnet_cpu_ref::quantize_weights(&v, n, k).unwrap();
    let layer = crate::Linear::new(&e, w.clone());
    let x: Vec<f32> = (0..k).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
    let want = bitnet_cpu_ref::bitlinear(&x, 1, &w).unwrap();
    let chunks = [&x[..], &x[..], &x[..], &x[..]];
    let mut got = Vec::new();
    let st = e
        .stream_bitlinear(chunks, &layer, |i, y| {
            got.push((i, y.to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(got.len(), 4);
    for (i, y) in &got {
        assert_eq!(y, &want, "chunk {i}");
    }
    assert_eq!((st.cpu_chunks, st.fallbacks), (4, 1), "{st:?}");
    assert_eq!(e.dispatch_stats().fallbacks, 1);
}
