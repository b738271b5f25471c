//! Tensor ops and layers on shapes the device cannot take, with the binding size capped at
//! 16 KiB: under `Auto` they run on the CPU (cpu-ref's values, bit for bit, as device tensors),
//! under `Gpu` they are the device's error; fused layers and chains give way to their unfused
//! ops; an output the device cannot hold is its error under both.

use bitnet_tests::{engine_on_own_device, gpu_engine_with};
use bitnet_wgpu::cpu_ref::{self, ops as cpu};
use bitnet_wgpu::{
    BinaryOp, ChainInput, DispatchPolicy, Engine, EngineOptions, Error, Linear, Location, ReduceOp,
    Tensor, wgpu,
};

use super::common::{bits, host, up, values};

/// A GPU engine whose bindings are capped at 16 KiB, under `policy`.
fn capped(policy: DispatchPolicy) -> Engine {
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    e.set_dispatch_policy(policy).unwrap();
    e
}

/// `got` is a device tensor holding `want`'s bits.
fn same(what: &str, got: bitnet_wgpu::Result<Tensor>, want: &[f32]) {
    let got = got.unwrap_or_else(|err| panic!("{what}: {err:?}"));
    assert_eq!(got.location(), Location::Device, "{what}");
    assert_eq!(bits(&got.read_f32().unwrap()), bits(want), "{what}");
}

/// Under `Auto` the shapes the tests above see refused under `Gpu` (a row or a bound-whole
/// operand past the binding cap; a broadcast past the kernel's six axes, `Unsupported`) run on
/// the CPU: cpu-ref's values, bit for bit, as device tensors. (They were the error under every
/// policy, where the docs promised a CPU run under `Auto`: a reviewer's finding.)
#[test]
fn auto_runs_the_shapes_the_device_cannot_take_on_the_cpu() {
    let e = capped(DispatchPolicy::Gpu);
    let long = values(5, 2 * 5000, -1.0, 1.0);
    let weight = values(6, 5000, 0.5, 1.5);
    let kv = values(23, 5000, -1.0, 1.0);
    let (a7, b7) = (values(7, 16, -1.0, 1.0), values(8, 8, -1.0, 1.0));
    let (s7a, s7b) = ([2, 1, 2, 1, 2, 1, 2], [1, 2, 1, 2, 1, 2, 1]);
    for policy in [DispatchPolicy::Gpu, DispatchPolicy::Auto] {
        e.set_dispatch_policy(policy).unwrap();
        let x = up(&e, &long, &[2, 5000]);
        let runs = [
            (
                "softmax_last",
                e.softmax_last(&x),
                cpu::softmax_last(&host(&long, &[2, 5000])),
            ),
            (
                "reduce_last",
                e.reduce_last(ReduceOp::Sum, &x),
                cpu::reduce_last(ReduceOp::Sum, &host(&long, &[2, 5000])),
            ),
            (
                "rms_norm",
                e.rms_norm(&x, &up(&e, &weight, &[5000]), 1e-5),
                cpu::rms_norm(&host(&long, &[2, 5000]), &weight, 1e-5),
            ),
            (
                "matmul",
                e.matmul(&up(&e, &long[..3], &[3, 1]), &up(&e, &long, &[1, 10_000])),
                cpu::matmul(&host(&long[..3], &[3, 1]), &host(&long, &[1, 10_000])),
            ),
            (
                "binary",
                e.binary(BinaryOp::Add, &x, &up(&e, &weight, &[1, 5000])),
                cpu::binary(
                    BinaryOp::Add,
                    &host(&long, &[2, 5000]),
                    &host(&weight, &[1, 5000]),
                ),
            ),
            (
                "attention",
                e.attention(
                    &up(&e, &[0.5; 4], &[1, 1, 4]),
                    &up(&e, &kv, &[1250, 1, 4]),
                    &up(&e, &kv, &[1250, 1, 4]),
                    0.5,
                    false,
                ),
                cpu::attention(
                    &host(&[0.5; 4], &[1, 1, 4]),
                    &host(&kv, &[1250, 1, 4]),
                    &host(&kv, &[1250, 1, 4]),
                    0.5,
                    false,
                ),
            ),
            (
                "seven-axis broadcast",
                e.binary(BinaryOp::Mul, &up(&e, &a7, &s7a), &up(&e, &b7, &s7b)),
                cpu::binary(BinaryOp::Mul, &host(&a7, &s7a), &host(&b7, &s7b)),
            ),
        ];
        for (what, got, want) in runs {
            match policy {
                DispatchPolicy::Gpu => assert!(
                    matches!(
                        got,
                        Err(Error::LimitExceeded { .. } | Error::Unsupported(_))
                    ),
                    "{what} under Gpu: {got:?}"
                ),
                _ => same(what, got, want.unwrap().data()),
            }
        }
        // Activations quantized from rows past the cap: the BitLinear after them runs on the
        // GPU from the CPU's codes.
        let w = cpu_ref::quantize_weights(&values(9, 8 * 5000, -1.0, 1.0), 8, 5000).unwrap();
        let y = e.bitlinear_tensor(&x, &e.upload_ternary(&w).unwrap());
        match policy {
            DispatchPolicy::Gpu => assert!(matches!(y, Err(Error::LimitExceeded { .. })), "{y:?}"),
            _ => same("bitlinear", y, &cpu_ref::bitlinear(&long, 2, &w).unwrap()),
        }
    }
}

/// A BitLinear whose fused launch cannot bind its output row (N = 5000: 20 KB) gives way to
/// quantization and the BitLinear on quantized rows, which take the shape as any tensor op does
/// (it was the fused launch's `LimitExceeded` under every policy: a reviewer's finding).
#[test]
fn a_bitlinear_past_the_cap_gives_way_to_its_unfused_ops() {
    let (n, k) = (5000, 256);
    let w = cpu_ref::quantize_weights(&values(30, n * k, -1.0, 1.0), n, k).unwrap();
    let x = values(31, k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, 1, &w).unwrap();
    for policy in [DispatchPolicy::Gpu, DispatchPolicy::Auto] {
        let e = capped(policy);
        let y = e.bitlinear_tensor(&up(&e, &x, &[1, k]), &e.upload_ternary(&w).unwrap());
        match policy {
            DispatchPolicy::Gpu => assert!(matches!(y, Err(Error::LimitExceeded { .. })), "{y:?}"),
            _ => same("bitlinear", y, &want),
        }
    }
}

/// A chain whose input the device cannot bind whole (4160 values: 16.6 KB) runs linear by linear
/// from then on, as after a kernel that fails to build (it failed every call: a reviewer's
/// finding); under `Auto` each linear then runs where it fits.
#[test]
fn a_chain_whose_input_the_device_cannot_bind_runs_linear_by_linear() {
    let e = capped(DispatchPolicy::Auto);
    let (n, k) = (8, 4160);
    let w = cpu_ref::quantize_weights(&values(32, n * k, -1.0, 1.0), n, k).unwrap();
    let chain = e
        .linear_chain(k, vec![(Linear::new(&e, w.clone()), ChainInput::Input)])
        .unwrap();
    let x = values(33, k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, 1, &w).unwrap();
    for _ in 0..2 {
        let got = chain.forward_tensor(&up(&e, &x, &[1, k])).unwrap();
        assert_eq!(bits(&got.read(0).unwrap()), bits(&want));
    }
    assert!(!chain.is_fused());
}

/// An output the device cannot hold (2 MiB on a device of 1 MiB buffers) is the op's own
/// `LimitExceeded` under `Auto` too: no CPU run computing what its upload could not store (it
/// ran, then failed naming the upload: a reviewer's finding).
#[test]
fn an_output_past_max_buffer_size_is_the_ops_error_under_auto() {
    let e = engine_on_own_device("1 MiB buffers", |a| {
        let limits = wgpu::Limits {
            max_buffer_size: 1 << 20,
            ..a.limits()
        };
        (a.features(), limits)
    });
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    let a = up(&e, &values(34, 512, -1.0, 1.0), &[512, 1]);
    let b = up(&e, &values(35, 1024, -1.0, 1.0), &[1, 1024]);
    match e.matmul(&a, &b) {
        Err(Error::LimitExceeded { limit, what, .. }) => {
            assert_eq!(limit, "max_buffer_size");
            assert!(what.contains("matmul"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}
