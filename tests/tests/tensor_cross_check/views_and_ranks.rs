//! Tensors whose shapes have more axes than a tensor holds inline (seven and eight), and views
//! (reshapes) that outlive the tensor they view, on the CPU engine and the GPU engine: the
//! elementwise ops, RMSNorm and BitLinear on them equal cpu-ref bit for bit, and a view keeps
//! its bytes after its source and every clone of it are gone.

use bitnet_wgpu::cpu_ref::ops::{self as cpu, BinaryOp, UnaryOp};
use bitnet_wgpu::cpu_ref::{self, Tensor as Host};
use bitnet_wgpu::{DType, Engine, Location};

use super::common::{bits, engine, host, up, values};

/// Rank 7 and 8 shapes (more axes than the header's inline six) of 2 · 3 · 4 · 8 values.
const LONG_SHAPES: [&[usize]; 2] = [&[1, 2, 1, 3, 1, 4, 8], &[2, 1, 3, 1, 1, 4, 1, 8]];

fn host_bits(t: &Host<f32>) -> Vec<u32> {
    bits(t.data())
}

fn check_long_shapes(e: &Engine) {
    for shape in LONG_SHAPES {
        let (a, b) = (values(71, 192, -3.0, 3.0), values(72, 192, -3.0, 3.0));
        let w = values(73, 8, 0.5, 1.5);
        let (ta, tb, tw) = (up(e, &a, shape), up(e, &b, shape), up(e, &w, &[8]));
        let (ha, hb) = (host(&a, shape), host(&b, shape));
        let relu = e.unary(UnaryOp::Relu, &ta).unwrap();
        assert_eq!(relu.shape(), shape);
        let want = cpu::unary(UnaryOp::Relu, &ha).unwrap();
        assert_eq!(
            bits(&relu.read_f32().unwrap()),
            host_bits(&want),
            "{shape:?}"
        );
        let sum = e.binary(BinaryOp::Add, &ta, &tb).unwrap();
        let want = cpu::binary(BinaryOp::Add, &ha, &hb).unwrap();
        assert_eq!(sum.shape(), shape);
        assert_eq!(
            bits(&sum.read_f32().unwrap()),
            host_bits(&want),
            "{shape:?}"
        );
        let norm = e.rms_norm(&ta, &tw, 1e-5).unwrap();
        let want = cpu::rms_norm(&ha, &w, 1e-5).unwrap();
        assert_eq!(norm.shape(), shape);
        assert_eq!(
            bits(&norm.read_f32().unwrap()),
            host_bits(&want),
            "{shape:?}"
        );
        // A long view of a short tensor, and back.
        let flat = ta.reshape(&[24, 8]).unwrap();
        assert_eq!(flat.shape(), &[24, 8]);
        assert_eq!(flat.reshape(shape).unwrap().read_f32().unwrap(), a);
    }
}

#[test]
fn long_shapes_match_cpu_ref_on_both_engines() {
    check_long_shapes(&Engine::cpu());
    check_long_shapes(engine());
}

fn check_views_outlive_their_source(e: &Engine) {
    let x = values(74, 4 * 64, -2.0, 2.0);
    let wq = cpu_ref::quantize_weights(&values(75, 16 * 64, -1.0, 1.0), 16, 64).unwrap();
    let w = e.upload_ternary(&wq).unwrap();
    let src = up(e, &x, &[2, 2, 64]);
    let clone = src.clone();
    let view = src.reshape(&[4, 64]).unwrap();
    // A view of a view shares the same bytes.
    let again = view.reshape(&[256]).unwrap();
    drop((src, clone));
    assert_eq!(view.read_f32().unwrap(), x);
    assert_eq!(again.read_f32().unwrap(), x);
    let y = e.bitlinear_tensor(&view, &w).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(y.shape(), &[4, 16]);
    let want = cpu_ref::bitlinear(&x, 4, &wq).unwrap();
    assert_eq!(bits(&y.read_f32().unwrap()), bits(&want));
    // A packed tensor's view keeps its scales: the same product through a reshaped weight.
    let w_view = w.reshape(&[16, 64]).unwrap();
    drop(w);
    let y = e.bitlinear_tensor(&view, &w_view).unwrap();
    assert_eq!(bits(&y.read_f32().unwrap()), bits(&want));
}

#[test]
fn views_outlive_their_source_on_both_engines() {
    let cpu_engine = Engine::cpu();
    check_views_outlive_their_source(&cpu_engine);
    check_views_outlive_their_source(engine());
    assert_eq!(up(&cpu_engine, &[1.0], &[1]).location(), Location::Host);
}
