//! Tensors run where they live: a GPU engine's host tensors (read back, or made under the CPU
//! policy) run on the CPU under any policy, its device tensors are read back under the CPU
//! policy, and each gives the CPU engine's values. Also a layer's weights going back to the
//! device with the policy, the view rules of packed tensors and the Auto policy's pricing of
//! sizes that overflow.

use bitnet_tests::{gpu_engine, random_f32, random_ternary};
use bitnet_wgpu::cpu_ref::TernaryMatrix;
use bitnet_wgpu::{
    BinaryOp, DType, DispatchPolicy, Engine, Error, Linear, Location, Tensor, UnaryOp,
};

/// Every tensor op the engine offers on F32 / ternary inputs, as `(name, values or error)`.
fn ops(
    e: &Engine,
    x: &Tensor,
    w: &Tensor,
    row: &Tensor,
) -> Vec<(&'static str, Result<Vec<f32>, Error>)> {
    let read = |t: Result<Tensor, Error>| t.and_then(|t| t.read_f32());
    vec![
        ("unary", read(e.unary(UnaryOp::Relu, x))),
        ("binary", read(e.binary(BinaryOp::Add, x, x))),
        (
            "binary_scalar",
            read(e.binary_scalar(BinaryOp::Mul, x, 2.0)),
        ),
        ("copy", read(e.copy(x))),
        ("softmax", read(e.softmax_last(x))),
        ("rms_norm", read(e.rms_norm(x, row, 1e-6))),
        ("matmul_bt", read(e.matmul_bt(x, x))),
        ("bitlinear", read(e.bitlinear_tensor(x, w))),
        (
            "quantize_activations",
            e.quantize_activations_tensor(x)
                .and_then(|q| q.read_activations())
                .map(|q| q.absmax().to_vec()),
        ),
    ]
}

fn inputs(e: &Engine) -> (Tensor, Tensor, Tensor) {
    let (m, k) = (3, 64);
    let x = e
        .upload_f32(&random_f32(1, m * k, -2.0, 2.0), &[m, k])
        .unwrap();
    let w = TernaryMatrix::from_i8(&random_ternary(2, 5 * k), 5, k, 0.25).unwrap();
    let row = e.upload_f32(&random_f32(3, k, 0.5, 1.5), &[k]).unwrap();
    (x, e.upload_ternary(&w).unwrap(), row)
}

#[test]
fn host_tensors_of_a_gpu_engine_run_on_the_cpu() {
    let cpu = Engine::cpu();
    let (cx, cw, crow) = inputs(&cpu);
    let want = ops(&cpu, &cx, &cw, &crow);
    let e = gpu_engine();
    let (x, w, row) = inputs(&e);
    let (hx, hw, hrow) = (
        x.to_host().unwrap(),
        w.to_host().unwrap(),
        row.to_host().unwrap(),
    );
    assert_eq!(hx.location(), Location::Host);
    for policy in [DispatchPolicy::Gpu, DispatchPolicy::Auto] {
        e.set_dispatch_policy(policy).unwrap();
        assert_eq!(ops(&e, &hx, &hw, &hrow), want, "{policy:?}: host inputs");
        // One host input among device ones is enough to run on the CPU.
        assert_eq!(ops(&e, &hx, &w, &row), want, "{policy:?}: mixed inputs");
    }
}

#[test]
fn device_tensors_under_the_cpu_policy_are_read_back() {
    let cpu = Engine::cpu();
    let (cx, cw, crow) = inputs(&cpu);
    let e = gpu_engine();
    let (x, w, row) = inputs(&e);
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    assert_eq!(ops(&e, &x, &w, &row), ops(&cpu, &cx, &cw, &crow));
    assert_eq!(e.copy(&x).unwrap().location(), Location::Host);
}

/// A layer whose weights were first needed under the CPU policy holds a host copy; once the
/// engine takes GPU work again its tensor ops get a device copy, not that host copy (on which
/// every later GPU call of the layer would silently run on the CPU), and under the CPU policy
/// the host weights again.
#[test]
fn a_layers_host_weights_give_way_to_a_device_copy() {
    let e = gpu_engine();
    let (k, n) = (64, 5);
    let w = TernaryMatrix::from_i8(&random_ternary(6, n * k), n, k, 0.25).unwrap();
    let layer = Linear::new(&e, w.clone());
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    assert_eq!(layer.device_weights().unwrap().location(), Location::Host);
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let dev = layer.device_weights().unwrap();
    assert_eq!(dev.location(), Location::Device);
    assert_eq!(dev.read_ternary().unwrap().words(), w.words());
    let x = random_f32(7, 2 * k, -1.0, 1.0);
    let want = bitnet_wgpu::cpu_ref::bitlinear(&x, 2, &w).unwrap();
    assert_eq!(layer.forward(&x, 2).unwrap(), want);
    // Under the CPU policy the layer's tensor ops get its host weights again: on the device
    // copy, every CPU BitLinear read the whole matrix back (0.5 GB a token for 2B4T's layers).
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    assert_eq!(layer.device_weights().unwrap().location(), Location::Host);
    let xt = e.upload_f32(&x, &[2, k]).unwrap();
    let got = e.bitlinear_tensor(&xt, &layer.device_weights().unwrap());
    assert_eq!(got.unwrap().read_f32().unwrap(), want);
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    assert_eq!(layer.device_weights().unwrap().location(), Location::Device);
}

#[test]
fn packed_tensors_keep_their_row_length_in_views() {
    for e in [Engine::cpu(), gpu_engine()] {
        let w = TernaryMatrix::from_i8(&random_ternary(4, 2 * 32), 2, 32, 0.5).unwrap();
        let w = e.upload_ternary(&w).unwrap();
        // [2, 20] has the same bytes (one padded word per row) but would read padding as codes.
        assert!(matches!(
            w.reshape(&[2, 20]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert_eq!(w.reshape(&[2, 32]).unwrap().shape(), &[2, 32]);
        let x = e
            .upload_f32(&random_f32(5, 2 * 8, -1.0, 1.0), &[2, 8])
            .unwrap();
        let q = e.quantize_activations_tensor(&x).unwrap();
        assert_eq!(q.dtype(), DType::QuantizedI8);
        // [2, 5] would drop three values of every row.
        assert!(matches!(
            q.reshape(&[2, 5]),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}

#[test]
fn auto_dispatch_prices_sizes_that_overflow_without_panicking() {
    let e = gpu_engine();
    bitnet_tests::auto_preferring_gpu(&e, "overflow");
    // usize::MAX rows of 3: the size error of cpu-ref, not an overflow panic while pricing.
    assert!(e.quantize_activations(&[1.0], usize::MAX, 3).is_err());
    assert!(e.quantize_weights(&[1.0], usize::MAX, 3).is_err());
}
