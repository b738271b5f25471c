//! Unit tests of the MSL path: when it is tried, and which ops fall back to WGSL.

use super::*;
use crate::status::STATUS_WORDS;

const ALL_FEATURES: wgpu::Features = wgpu::Features::PASSTHROUGH_SHADERS;

fn ok(_: &Kernel) -> std::result::Result<(), String> {
    Ok(())
}

#[test]
fn only_apple_gpus_run_the_32_wide_msl_kernels() {
    assert_eq!(
        simd_width_unknown(wgpu::Backend::Metal, "Apple M2 Pro"),
        None
    );
    for name in ["AMD Radeon Pro 5500M", "Intel(R) UHD Graphics 630"] {
        let why = simd_width_unknown(wgpu::Backend::Metal, name).unwrap();
        assert!(why.contains("32-wide") && why.contains(name), "{why}");
    }
    assert_eq!(
        simd_width_unknown(wgpu::Backend::Vulkan, "NVIDIA H200"),
        None
    );
}

#[test]
fn metal_with_passthrough_and_immediates_uses_msl_everywhere() {
    let p = select(
        wgpu::Backend::Metal,
        ALL_FEATURES,
        ParamsMode::Immediates,
        None,
        ok,
    );
    assert_eq!(p, HotPaths::all(KernelPath::Msl));
}

#[test]
fn other_backends_and_modes_use_wgsl_and_say_why() {
    let never = |k: &Kernel| -> std::result::Result<(), String> { panic!("{} built", k.name()) };
    for backend in [
        wgpu::Backend::Vulkan,
        wgpu::Backend::Dx12,
        wgpu::Backend::Gl,
    ] {
        let p = select(backend, ALL_FEATURES, ParamsMode::Immediates, None, never);
        assert!(
            matches!(&p.bitlinear_gemv, KernelPath::Wgsl(w) if w.contains("Metal backend")),
            "{p}"
        );
    }
    let cases = [
        (
            wgpu::Features::empty(),
            ParamsMode::Immediates,
            None,
            "PASSTHROUGH_SHADERS",
        ),
        (ALL_FEATURES, ParamsMode::Uniform, None, "uniform mode"),
        (
            ALL_FEATURES,
            ParamsMode::Immediates,
            Some("0"),
            "BITNET_MSL=0",
        ),
    ];
    for (features, mode, env, why) in cases {
        let p = select(wgpu::Backend::Metal, features, mode, env, never);
        assert_eq!(
            p,
            HotPaths::all(p.quantize_weights.clone()),
            "one reason for every op"
        );
        assert!(
            matches!(&p.quantize_weights, KernelPath::Wgsl(w) if w.contains(why)),
            "{p}"
        );
    }
}

/// `BITNET_MSL` takes the spellings of the engine's other switches (`BITNET_AUTOTUNE`): every
/// off value turns MSL off; on values, blanks and unknown values leave it on.
#[test]
fn every_off_spelling_of_bitnet_msl_turns_it_off() {
    let why = |v| {
        unavailable(
            wgpu::Backend::Metal,
            ALL_FEATURES,
            ParamsMode::Immediates,
            v,
        )
    };
    for v in ["0", " 0", "0\n", "off", "OFF", "false", "No"] {
        assert!(why(Some(v)).is_some_and(|w| w.contains(MSL_ENV)), "{v:?}");
    }
    for v in ["1", "on", "true", "", " ", "maybe"] {
        assert_eq!(why(Some(v)), None, "{v:?}");
    }
}

#[test]
fn a_failing_pipeline_falls_back_only_for_the_ops_that_need_it() {
    let no_gemm = |k: &Kernel| {
        if k.name() == msl::BITLINEAR_GEMM.name {
            Err("no simdgroup_matrix".into())
        } else {
            Ok(())
        }
    };
    let p = select(
        wgpu::Backend::Metal,
        ALL_FEATURES,
        ParamsMode::Immediates,
        None,
        no_gemm,
    );
    assert_eq!(p.quantize_weights, KernelPath::Msl);
    assert_eq!(p.quantize_activations, KernelPath::Msl);
    assert_eq!(p.bitlinear_gemv, KernelPath::Msl);
    assert!(
        matches!(&p.bitlinear_gemm, KernelPath::Wgsl(w) if w.contains("bitlinear_gemm_msl") && w.contains("no simdgroup_matrix"))
    );
}

/// A GPU engine (CI has lavapipe); failing, not skipping, without an adapter.
fn gpu() -> crate::Engine {
    crate::test_gpu::gpu()
}

#[test]
fn engine_info_reports_the_hot_paths() {
    let cpu = crate::Engine::cpu().info();
    assert_eq!(cpu.hot_paths, HotPaths::all(KernelPath::Cpu));
    let info = gpu().info();
    assert!(info.to_string().contains("hot ops:"), "{info}");
    if info.backend != "Metal" {
        assert_eq!(
            info.hot_paths,
            HotPaths::all(info.hot_paths.bitlinear_gemv.clone())
        );
        assert!(
            matches!(&info.hot_paths.bitlinear_gemv, KernelPath::Wgsl(w) if w.contains("Metal backend"))
        );
    }
}

#[test]
fn msl_pipeline_creation_off_metal_is_an_error_not_a_panic() {
    // Off Metal, a passthrough MSL module either needs a feature the device lacks or is
    // rejected by wgpu inside the cache's error scopes; both are typed errors, and the engine
    // keeps working afterwards.
    let e = gpu();
    let g = e.gpu_context().unwrap();
    if g.adapter_info.backend == wgpu::Backend::Metal {
        return;
    }
    // The probe's own fallback, as on a Mac whose compiler rejects the kernels: selecting as
    // if this were Metal, every pipeline fails in the real cache and every op keeps WGSL.
    let build = |k: &Kernel| {
        g.pipelines
            .get(k, &[])
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let features = g.caps.features | wgpu::Features::PASSTHROUGH_SHADERS;
    let p = select(
        wgpu::Backend::Metal,
        features,
        ParamsMode::Immediates,
        None,
        build,
    );
    for path in [
        &p.quantize_weights,
        &p.quantize_activations,
        &p.bitlinear_gemv,
        &p.bitlinear_gemm,
    ] {
        assert!(
            matches!(path, KernelPath::Wgsl(w) if w.contains("failed")),
            "{p}"
        );
    }
    let t = e.upload_f32(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(e.copy(&t).unwrap().read_f32().unwrap(), vec![1.0, 2.0]);
}

#[test]
fn pipeline_bindings_match_the_msl_descriptors() {
    for (kernel, desc) in [
        (ABS_SUM, msl::ABS_SUM_BLOCKS),
        (QUANT_W, msl::QUANTIZE_WEIGHTS),
        (QUANT_X, msl::QUANTIZE_ACTIVATIONS),
        (GEMV, msl::BITLINEAR_GEMV),
        (GEMM, msl::BITLINEAR_GEMM),
    ] {
        let want: Vec<Access> = desc
            .storage()
            .map(|b| {
                if b.kind == msl::BindingKind::StorageRead {
                    Read
                } else {
                    ReadWrite
                }
            })
            .collect();
        assert_eq!(kernel.bindings, want.as_slice(), "{}", desc.name);
        assert_eq!((kernel.name(), kernel.entry), (desc.name, desc.entry_point));
        assert!(
            kernel
                .requires
                .contains(wgpu::Features::PASSTHROUGH_SHADERS)
        );
        assert!(desc.status_words.len() <= STATUS_WORDS);
    }
}
