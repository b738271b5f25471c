//! Routing of the MSL hooks, exercised off Metal on an engine whose hot paths are forced to MSL:
//! what must not reach an MSL kernel falls back (any MSL launch would fail to build here).

use bitnet_cpu_ref::{bitlinear, quantize_weights};

use crate::engine::Engine;
use crate::msl::{FORCED_PATHS, HotPaths, KernelPath};

/// A GPU engine that believes every hot op runs MSL.
fn msl_engine() -> Engine {
    FORCED_PATHS.with(|f| *f.borrow_mut() = Some(HotPaths::all(KernelPath::Msl)));
    let e = crate::test_gpu::gpu();
    assert_eq!(e.info().hot_paths, HotPaths::all(KernelPath::Msl));
    e
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A host-staged operand (`Tensor::to_host`) of a GPU engine cannot be bound to a kernel: BitLinear
/// on f32 activations must take the path that handles it (as it does without MSL), not launch the
/// fused MSL GEMV and fail with "tensor lives on the host". (A device `x` with a host `w` would
/// quantize `x` on MSL first, which cannot run here.)
#[test]
fn bitlinear_with_a_host_operand_skips_the_msl_gemv() {
    let e = msl_engine();
    let (m, n, k) = (2, 5, 40);
    let xv: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let wv: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.91).cos()).collect();
    let wq = quantize_weights(&wv, n, k).unwrap();
    let want = bits(&bitlinear(&xv, m, &wq).unwrap());
    let x = e.upload_f32(&xv, &[m, k]).unwrap();
    let w = e.upload_ternary(&wq).unwrap();
    for (x, w, what) in [
        (x.to_host().unwrap(), w.clone(), "host x"),
        (x.to_host().unwrap(), w.to_host().unwrap(), "host x and w"),
    ] {
        let y = e
            .bitlinear_tensor(&x, &w)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(bits(&y.read_f32().unwrap()), want, "{what}");
    }
}
