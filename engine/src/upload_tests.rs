//! Tests of tensor creation (`upload.rs`): host words, the CPU engine's ternary tensors, and
//! data and scales (a KV cache's keys and values) always on one side.

use super::*;
use crate::linear::Linear;
use crate::tensor::Location;

/// Host words are the bytes little-endian, the last word zero-padded, for every tail length.
#[test]
fn host_words_pad_the_last_word_with_zeros() {
    let bytes: Vec<u8> = (1..=11).collect();
    for len in 0..=bytes.len() {
        let mut padded = bytes[..len].to_vec();
        padded.resize(len.div_ceil(4) * 4, 0);
        let expected: Vec<u32> = padded
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        assert_eq!(
            to_words("t", &bytes[..len]).unwrap(),
            expected,
            "{len} bytes"
        );
    }
    assert_eq!(host_words("t", 9, 7).unwrap(), vec![7; 3]);
    assert!(matches!(
        host_words("t", u64::MAX, 0),
        Err(Error::LimitExceeded { .. })
    ));
}

fn matrix(n: usize, k: usize) -> TernaryMatrix {
    let codes: Vec<i8> = (0..n * k).map(|i| ((i * 7) % 3) as i8 - 1).collect();
    TernaryMatrix::from_i8(&codes, n, k, 0.25).unwrap()
}

/// The CPU engine's ternary tensors hold the matrix itself: reads, host copies and BitLinear
/// see exactly the uploaded words, and a layer's tensor shares the layer's matrix.
#[test]
fn cpu_ternary_tensors_are_the_matrix() {
    let e = Engine::cpu();
    let w = matrix(6, 40);
    let t = e.upload_ternary(&w).unwrap();
    assert_eq!(t.location(), Location::Host);
    assert!(matches!(t.data(), Storage::HostTernary(_)));
    assert_eq!(t.read_ternary().unwrap(), w);
    assert_eq!(t.to_host().unwrap().read_ternary().unwrap(), w);
    let bytes = t.read_bytes().unwrap();
    assert_eq!(bytes, bytemuck::cast_slice::<u32, u8>(w.words()));
    let x: Vec<f32> = (0..2 * 40).map(|i| (i as f32 * 0.37).sin()).collect();
    let got = e
        .bitlinear_tensor(&e.upload_f32(&x, &[2, 40]).unwrap(), &t)
        .unwrap()
        .read_f32()
        .unwrap();
    assert_eq!(got, bitnet_cpu_ref::bitlinear(&x, 2, &w).unwrap());
    let layer = Linear::new(&e, w.clone());
    let dw = layer.device_weights().unwrap();
    match dw.data() {
        Storage::HostTernary(m) => assert!(std::ptr::eq(&**m, layer.weights())),
        _ => panic!("a CPU layer's tensor is its matrix"),
    }
}

/// Which side a storage is on.
fn on_device(s: &Storage) -> bool {
    matches!(s, Storage::Device(_))
}

/// A tensor's data and scales — and a KV cache's keys and values — land on one side while
/// another thread flips the dispatch policy between `Cpu` and `Auto` once per creation, at a
/// varying point inside it (each creation resolves where it runs once; a device tensor with host
/// scales could be neither launched nor moved). Once the policy settles, every one of them
/// computes cpu-ref's result.
#[test]
fn policy_flips_never_split_a_tensor_or_a_cache() {
    use crate::DispatchPolicy;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let e = crate::test_gpu::gpu();
    let w = matrix(8, 64);
    let x: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.61).cos()).collect();
    let xq = bitnet_cpu_ref::quantize_activations(&x, 2, 64).unwrap();
    let (stop, started) = (AtomicBool::new(false), AtomicUsize::new(0));
    let (mut made, mut caches) = (Vec::new(), Vec::new());
    let (mut device, mut host) = (0, 0);
    /// Stops the flipper however the loop ends (a failed assertion must not leave it spinning
    /// while the scope waits for it).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let now = started.load(Ordering::Acquire);
                if now == seen {
                    std::hint::spin_loop();
                    continue;
                }
                seen = now;
                // 0 to ~20 µs into the creation: before, between and after its stores.
                for _ in 0..(now * 37) % 4096 {
                    std::hint::spin_loop();
                }
                let policy = [DispatchPolicy::Auto, DispatchPolicy::Cpu][now % 2];
                e.set_dispatch_policy(policy).unwrap();
            }
        });
        // Until both sides were seen often (the flipper may start late), within a bound.
        for i in 1..=5000 {
            started.store(i, Ordering::Release);
            let pair = (
                e.upload_activations(&xq).unwrap(),
                e.upload_ternary(&w).unwrap(),
            );
            for t in [&pair.0, &pair.1] {
                let data = on_device(t.data());
                assert_eq!(data, on_device(t.scales().unwrap()), "one side");
                *if data { &mut device } else { &mut host } += 1;
            }
            made.push(pair);
            caches.push(e.kv_cache(4, 1, 8).unwrap());
            if device >= 300 && host >= 300 {
                break;
            }
        }
    });
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    assert!(
        device > 0 && host > 0,
        "{device} device, {host} host tensors"
    );
    let expected = bitnet_cpu_ref::bitlinear_quantized(&xq, &w).unwrap();
    for (a, b) in &made {
        let y = e.bitlinear_tensor(a, b).unwrap().read_f32().unwrap();
        assert_eq!(y, expected);
    }
    let (k, v) = ((0..8).map(|i| i as f32).collect::<Vec<_>>(), vec![0.5; 8]);
    let (kt, vt) = (
        e.upload_f32(&k, &[1, 1, 8]).unwrap(),
        e.upload_f32(&v, &[1, 1, 8]).unwrap(),
    );
    for c in &mut caches {
        c.append(&kt, &vt).unwrap();
        assert_eq!(c.keys().unwrap().read_f32().unwrap(), k);
        assert_eq!(c.values().unwrap().read_f32().unwrap(), v);
    }
}
