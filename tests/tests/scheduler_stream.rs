//! Streaming through the upload staging ring: every chunk's output equals cpu-ref's bit for bit,
//! in order; bad chunks are typed errors; GPU faults mid-stream fall back per chunk.

use bitnet_tests::{gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{DispatchPolicy, Error, InjectedFault, Linear, wgpu};

fn layer(e: &bitnet_wgpu::Engine, n: usize, k: usize) -> (Linear, TernaryMatrix) {
    let w = cpu_ref::quantize_weights(&random_normal(9, n * k, 0.02), n, k).unwrap();
    (Linear::new(e, w.clone()), w)
}

/// Chunks of varied row counts (one large enough for the parallel staging copy).
fn chunks(k: usize) -> Vec<Vec<f32>> {
    [3usize, 64, 1, 17, 1200, 5, 40]
        .iter()
        .enumerate()
        .map(|(i, &rows)| random_f32(i as u64 + 50, rows * k, -4.0, 4.0))
        .collect()
}

#[test]
fn streamed_chunks_match_cpu_ref_in_order() {
    let e = gpu_engine();
    let (n, k) = (72, 1000);
    let (l, w) = layer(&e, n, k);
    let data = chunks(k);
    for pass in 0..2 {
        // The second pass reuses the engine's staging ring.
        let mut seen = Vec::new();
        let st = e
            .stream_bitlinear(data.iter().map(Vec::as_slice), &l, |i, y| {
                let x = &data[i];
                let want = cpu_ref::bitlinear(x, x.len() / k, &w).unwrap();
                assert_eq!(y, &want[..], "pass {pass} chunk {i}");
                seen.push(i);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, (0..data.len()).collect::<Vec<_>>());
        let rows: usize = data.iter().map(|c| c.len() / k).sum();
        assert_eq!(
            (st.chunks, st.rows, st.gpu_chunks, st.fallbacks),
            (7, rows, 7, 0)
        );
        assert_eq!(st.input_bytes, 4 * (rows * k) as u64);
        assert_eq!(st.output_bytes, 4 * (rows * n) as u64);
    }
    let up = e.stream_upload(data.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(up.chunks, 7);
    println!(
        "lavapipe ring upload: {:.2} GB/s",
        up.input_bytes_per_s() / 1e9
    );
}

#[test]
fn bad_chunks_are_typed_errors_after_the_good_ones_were_delivered() {
    let e = gpu_engine();
    let (n, k) = (16, 64);
    let (l, _) = layer(&e, n, k);
    let mut data = chunks(k);
    data[3][5 * k - 3] = f32::NAN;
    let mut delivered = Vec::new();
    let err = e
        .stream_bitlinear(data.iter().map(Vec::as_slice), &l, |i, _| {
            delivered.push(i);
            Ok(())
        })
        .unwrap_err();
    let want =
        Error::from(cpu_ref::bitlinear(&data[3], data[3].len() / k, l.weights()).unwrap_err());
    assert_eq!(err, want);
    assert_eq!(delivered, vec![0, 1, 2]);
    // On the GPU, so the good chunk before the ragged one goes through the staging ring.
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let ragged = [&data[0][..], &data[1][..k + 1]];
    assert!(matches!(
        e.stream_bitlinear(ragged, &l, |_, _| Ok(())),
        Err(Error::ShapeMismatch {
            op: "stream_bitlinear",
            ..
        })
    ));
    // After that error the engine streams on: every chunk of the next stream on the GPU, none
    // fell back.
    let mut outputs = 0;
    let st = e
        .stream_bitlinear(data[..3].iter().map(Vec::as_slice), &l, |i, y| {
            let x = &data[i];
            assert_eq!(
                y,
                &cpu_ref::bitlinear(x, x.len() / k, l.weights()).unwrap()[..]
            );
            outputs += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!((outputs, st.gpu_chunks, st.fallbacks), (3, 3, 0), "{st:?}");
    // The sink's own error stops the stream and is returned as is.
    let stop = Error::Unsupported("sink full".into());
    let got = e.stream_bitlinear(data[..2].iter().map(Vec::as_slice), &l, |_, _| {
        Err(stop.clone())
    });
    assert_eq!(got.unwrap_err(), stop);
}

/// A ragged chunk is an error only after every chunk before it was delivered — on the CPU
/// engine and on the GPU alike — not with the chunks still queued behind the stream's overlap
/// silently dropped.
#[test]
fn a_ragged_chunk_fails_after_the_chunks_before_it_were_delivered() {
    let (n, k) = (16, 64);
    for e in [bitnet_wgpu::Engine::cpu(), gpu_engine()] {
        let (l, w) = layer(&e, n, k);
        let data = chunks(k);
        let ragged = &data[3][..k + 1];
        let stream = [
            &data[0][..],
            &data[1][..],
            &data[2][..],
            ragged,
            &data[4][..],
        ];
        let mut delivered = Vec::new();
        let got = e.stream_bitlinear(stream, &l, |i, y| {
            let x = &data[i];
            assert_eq!(y, &cpu_ref::bitlinear(x, x.len() / k, &w).unwrap()[..]);
            delivered.push(i);
            Ok(())
        });
        let kind = e.backend_kind();
        assert!(
            matches!(
                got,
                Err(Error::ShapeMismatch {
                    op: "stream_bitlinear",
                    ..
                })
            ),
            "{kind:?}: {got:?}"
        );
        assert_eq!(delivered, vec![0, 1, 2], "{kind:?}");
    }
}

/// A layer of another engine is `EngineMismatch` before any chunk, whatever backend each chunk
/// would take — not a stream whose CPU chunks run and whose GPU chunks fail (under `Auto` the
/// outcome depended on each chunk's prediction).
#[test]
fn a_layer_of_another_engine_is_rejected_up_front() {
    let (a, b) = (gpu_engine(), gpu_engine());
    let x = random_f32(5, 64, -1.0, 1.0);
    for (e, owner) in [
        (&a, &b),
        (&bitnet_wgpu::Engine::cpu(), &b),
        (&a, &bitnet_wgpu::Engine::cpu()),
    ] {
        let (l, _) = layer(owner, 8, 64);
        let mut delivered = 0;
        let got = e.stream_bitlinear([&x[..]], &l, |_, _| {
            delivered += 1;
            Ok(())
        });
        assert!(
            matches!(
                got,
                Err(Error::EngineMismatch {
                    op: "stream_bitlinear"
                })
            ),
            "{got:?}"
        );
        assert_eq!(delivered, 0);
    }
}

#[test]
fn a_fault_mid_stream_falls_back_per_chunk_and_cpu_policy_streams_on_the_cpu() {
    let e = gpu_engine();
    let (n, k) = (40, 256);
    let (l, w) = layer(&e, n, k);
    let data = chunks(k);
    let check = |i: usize, y: &[f32]| {
        let x = &data[i];
        assert_eq!(
            y,
            &cpu_ref::bitlinear(x, x.len() / k, &w).unwrap()[..],
            "chunk {i}"
        );
        Ok(())
    };
    l.device_weights().unwrap();
    e.inject_fault(InjectedFault::Validation);
    let st = e
        .stream_bitlinear(data.iter().map(Vec::as_slice), &l, check)
        .unwrap();
    assert_eq!(
        (st.fallbacks, st.gpu_chunks + st.cpu_chunks),
        (1, 7),
        "{st:?}"
    );
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let st = e
        .stream_bitlinear(data.iter().map(Vec::as_slice), &l, check)
        .unwrap();
    assert_eq!((st.cpu_chunks, st.gpu_chunks), (7, 0));
}

/// A stream_upload that fails after taking a staging slot (an empty chunk; an allocation that
/// fails) leaves the engine's ring usable: later streams upload every chunk on the GPU.
#[test]
fn a_failed_stream_upload_leaves_the_ring_usable() {
    let e = gpu_engine();
    let ok = vec![1.0f32; 1024];
    let empty: &[f32] = &[];
    assert!(matches!(
        e.stream_upload([&ok[..], empty]),
        Err(Error::EmptyTensor { .. })
    ));
    e.inject_fault(InjectedFault::OutOfMemory);
    assert!(e.stream_upload([&ok[..]]).is_err());
    for pass in 0..2 {
        let r = e.stream_upload([&ok[..], &ok[..], &ok[..], &ok[..]]);
        assert_eq!(r.map(|s| s.chunks), Ok(4), "pass {pass}");
    }
    let (l, _) = layer(&e, 16, 64);
    let data = chunks(64);
    let st = e
        .stream_bitlinear(data.iter().map(Vec::as_slice), &l, |_, _| Ok(()))
        .unwrap();
    assert_eq!((st.gpu_chunks, st.fallbacks), (data.len(), 0));
    // No uncaptured validation error (an unmap of an unmapped slot) is left behind either.
    e.sync().unwrap();
}

/// Under `Auto`, a device limit re-runs a host-facing op on the CPU (`fault.rs`): a stream chunk
/// whose rows outgrow the storage-binding limit is computed on the CPU, as `Linear::forward` on
/// the same rows is, instead of failing the stream.
#[test]
fn auto_streams_fall_back_on_a_device_limit_like_linear() {
    use bitnet_wgpu::EngineOptions;
    let e = bitnet_tests::gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(4096), // one f32 row of K = 2048 is 8 KiB: it cannot be split
        ..Default::default()
    });
    bitnet_tests::auto_preferring_gpu(&e, "gpu always wins");
    let (n, k) = (8, 2048);
    let (l, w) = layer(&e, n, k);
    let x = random_f32(77, 2 * k, -4.0, 4.0);
    let want = cpu_ref::bitlinear(&x, 2, &w).unwrap();
    assert_eq!(l.forward(&x, 2).unwrap(), want, "Linear falls back");
    let mut got = Vec::new();
    let st = e
        .stream_bitlinear([&x[..]], &l, |_, y| {
            got.extend_from_slice(y);
            Ok(())
        })
        .unwrap();
    assert_eq!(got, want);
    assert_eq!((st.chunks, st.cpu_chunks), (1, 1));
}

/// Under `Gpu`, a chunk the device cannot take (its activations over the device's
/// `max_buffer_size`) fails the stream without a CPU rerun, after the chunks submitted before it
/// were delivered, in order, with their values.
#[test]
fn a_chunk_the_device_cannot_take_under_gpu_fails_after_the_chunks_before_it() {
    let max_buffer: u64 = 1 << 20;
    let e = bitnet_tests::engine_on_own_device("1 MiB buffers", |a| {
        let limits = wgpu::Limits {
            max_buffer_size: max_buffer,
            ..a.limits()
        };
        (a.features(), limits)
    });
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let (n, k) = (16, 1024);
    let (l, w) = layer(&e, n, k);
    let small = random_f32(60, 4 * k, -4.0, 4.0);
    // 300 rows of 4 KiB: past the 1 MiB buffer.
    let big = random_f32(61, 300 * k, -4.0, 4.0);
    let mut delivered = Vec::new();
    let got = e.stream_bitlinear([&small[..], &small[..], &big[..]], &l, |i, y| {
        assert_eq!(
            y,
            &cpu_ref::bitlinear(&small, 4, &w).unwrap()[..],
            "chunk {i}"
        );
        delivered.push(i);
        Ok(())
    });
    assert!(matches!(got, Err(Error::LimitExceeded { .. })), "{got:?}");
    assert_eq!(delivered, [0, 1]);
}
