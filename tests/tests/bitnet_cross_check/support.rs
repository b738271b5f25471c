//! Shared helpers of the BitNet cross-check: the engines every test runs on, bit-exact
//! assertions, and the per-op checks (GPU through the public API vs cpu-ref).

use std::sync::OnceLock;

use bitnet_tests::{engine_on_own_device, gpu_engine, gpu_engine_with, tolerance};
use bitnet_wgpu::cpu_ref::{self, QuantizedActivations, TernaryMatrix};
use bitnet_wgpu::{Engine, EngineOptions, Error, ParamsMode, wgpu};

/// The default GPU engine (subgroups and immediates where the adapter has them), shared.
pub fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(gpu_engine)
}

/// An engine on a device requested with no optional features: no SUBGROUP (workgroup-memory
/// GEMV), no IMMEDIATES (uniform params arena). Fails loudly without an adapter.
pub fn plain_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let e = engine_on_own_device("bitnet cross-check: no optional features", |a| {
            (wgpu::Features::empty(), a.limits())
        });
        assert_eq!(e.info().params_mode, Some(ParamsMode::Uniform));
        e
    })
}

/// An engine on a device requested with WebGPU's default limits (16 KiB of workgroup memory,
/// 256 invocations per workgroup, 8 storage buffers per stage, 128 MiB bindings), as a browser or
/// a small mobile GPU gives, and the features the hot kernels use: every kernel above those
/// limits must give way to one within them, never fail to build.
pub fn webgpu_limits_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let e = engine_on_own_device("bitnet cross-check: WebGPU default limits", |a| {
            let hot = wgpu::Features::SUBGROUP | wgpu::Features::MEMORY_DECORATION_COHERENT;
            (a.features() & hot, wgpu::Limits::default())
        });
        let limits = e.info().limits.expect("a GPU engine");
        assert_eq!(
            limits.max_compute_workgroup_storage_size,
            wgpu::Limits::default().max_compute_workgroup_storage_size
        );
        e
    })
}

/// An engine whose storage bindings are capped at 64 KiB, so every op takes its chunked path.
pub fn chunked_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        gpu_engine_with(EngineOptions {
            max_binding_bytes: Some(64 << 10),
            ..Default::default()
        })
    })
}

/// The four engines every shape-sweep runs on (names for messages).
pub fn engines() -> [(&'static str, &'static Engine); 4] {
    [
        ("default", engine()),
        ("plain", plain_engine()),
        ("chunked", chunked_engine()),
        ("webgpu-limits", webgpu_limits_engine()),
    ]
}

/// No engine of the sweep failed to build a pipeline: an op whose kernel fails to build falls
/// back (to the CPU) with the right values, which the value checks cannot tell from the kernel
/// running — on the WebGPU-limits engine that would be a kernel above a limit no plan checked.
pub fn assert_every_pipeline_built() {
    for (name, e) in engines() {
        assert_eq!(
            e.pipeline_stats().failed,
            0,
            "{name}: pipelines failed to build"
        );
    }
}

/// Codes and scale bits equal, else a panic naming the first differing weight.
pub fn assert_ternary_eq(got: &TernaryMatrix, want: &TernaryMatrix, ctx: &str) {
    assert_eq!((got.n(), got.k()), (want.n(), want.k()), "{ctx}: shape");
    assert_eq!(
        got.scale().to_bits(),
        want.scale().to_bits(),
        "{ctx}: scale {:e} vs cpu-ref {:e}",
        got.scale(),
        want.scale()
    );
    if got.words() != want.words() {
        let (g, w) = (got.to_i8(), want.to_i8());
        let i = (0..g.len()).find(|&i| g[i] != w[i]).unwrap_or(0);
        panic!(
            "{ctx}: weight {i} (row {}, k {}) is {} vs cpu-ref {}",
            i / want.k(),
            i % want.k(),
            g[i],
            w[i]
        );
    }
}

/// Values and absmax bits equal, else a panic naming the first difference.
pub fn assert_acts_eq(got: &QuantizedActivations, want: &QuantizedActivations, ctx: &str) {
    assert_eq!((got.m(), got.k()), (want.m(), want.k()), "{ctx}: shape");
    let (ga, wa): (Vec<u32>, Vec<u32>) = (
        got.absmax().iter().map(|a| a.to_bits()).collect(),
        want.absmax().iter().map(|a| a.to_bits()).collect(),
    );
    assert_eq!(ga, wa, "{ctx}: absmax bits");
    if let Some(i) = (0..want.values().len()).find(|&i| got.values()[i] != want.values()[i]) {
        panic!(
            "{ctx}: value {i} is {} vs cpu-ref {}",
            got.values()[i],
            want.values()[i]
        );
    }
}

/// Bit-identical f32 outputs, else a panic naming the first differing element.
pub fn assert_bits_eq(got: &[f32], want: &[f32], ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}: length");
    if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{ctx}: element {i} is {:e} vs cpu-ref {:e}",
            got[i], want[i]
        );
    }
    // The suite's stated tolerance for BitLinear is exact; keep the table honest.
    tolerance("bitlinear").assert_close(ctx, got, want);
}

/// Weight quantization on `e` vs cpu-ref through the slice API; returns cpu-ref's matrix.
pub fn check_weights(e: &Engine, w: &[f32], n: usize, k: usize, ctx: &str) -> TernaryMatrix {
    let want = cpu_ref::quantize_weights(w, n, k).unwrap();
    let got = e
        .quantize_weights(w, n, k)
        .unwrap_or_else(|err| panic!("{ctx}: {err}"));
    assert_ternary_eq(&got, &want, ctx);
    want
}

/// Activation quantization on `e` vs cpu-ref through the slice API; returns cpu-ref's result.
pub fn check_acts(e: &Engine, x: &[f32], m: usize, k: usize, ctx: &str) -> QuantizedActivations {
    let want = cpu_ref::quantize_activations(x, m, k).unwrap();
    let got = e
        .quantize_activations(x, m, k)
        .unwrap_or_else(|err| panic!("{ctx}: {err}"));
    assert_acts_eq(&got, &want, ctx);
    want
}

/// The same output bits, or the same error, on both paths.
pub fn assert_same_result(
    got: Result<Vec<f32>, Error>,
    want: cpu_ref::Result<Vec<f32>>,
    ctx: &str,
) {
    match (got, want.map_err(Error::from)) {
        (Ok(g), Ok(w)) => assert_bits_eq(&g, &w, ctx),
        (Err(g), Err(w)) => assert_eq!(g, w, "{ctx}: errors differ"),
        (g, w) => panic!("{ctx}: GPU gave {g:?}, cpu-ref gave {w:?}"),
    }
}

/// BitLinear on `e` vs cpu-ref: accumulators, outputs from quantized and from f32 activations
/// (or the same error, e.g. an output that overflows).
pub fn check_linear(e: &Engine, x: &[f32], m: usize, w: &TernaryMatrix, ctx: &str) {
    let xq = cpu_ref::quantize_activations(x, m, w.k()).unwrap();
    let acc = e
        .bitlinear_accumulate(&xq, w)
        .unwrap_or_else(|err| panic!("{ctx}: {err}"));
    assert_eq!(
        acc,
        cpu_ref::bitlinear_accumulate(&xq, w).unwrap(),
        "{ctx}: accumulators"
    );
    let want = cpu_ref::bitlinear_quantized(&xq, w);
    assert_same_result(
        e.bitlinear_quantized(&xq, w),
        want,
        &format!("{ctx}: quantized x"),
    );
    let want = cpu_ref::bitlinear(x, m, w);
    assert_same_result(e.bitlinear(x, m, w), want, &format!("{ctx}: f32 x"));
}
