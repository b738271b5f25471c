//! Unit tests of the MSL path: when it is tried, and which ops fall back to WGSL.

use super::*;
use crate::status::STATUS_WORDS;

const ALL_FEATURES: wgpu::Features = wgpu::Features::PASSTHROUGH_SHADERS;

fn ok(_: &Kernel) -> std::result::Result<(), String> {
    Ok(())
}

/// Every MSL kernel with its descriptor.
const KERNELS: [(Kernel, MslKernel); 5] = [
    (ABS_SUM, msl::ABS_SUM_BLOCKS),
    (QUANT_W, msl::QUANTIZE_WEIGHTS),
    (QUANT_X, msl::QUANTIZE_ACTIVATIONS),
    (GEMV, msl::BITLINEAR_GEMV),
    (GEMM, msl::BITLINEAR_GEMM),
];
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
    for (kernel, desc) in KERNELS {
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

/// `(group, binding) -> (Metal buffer index, read_only)` of a pipeline layout's resources.
type MetalSlots = std::collections::HashMap<(u32, u32), (u32, bool)>;

/// The Metal buffer index of every resource of a compute pipeline layout, as wgpu-hal 30's Metal
/// backend assigns them (`metal/device.rs`, `create_pipeline_layout`): the immediates buffer first
/// when `immediate_size != 0`, then each group's compute-visible entries in binding order (wgpu-core
/// sorts a layout's entries by binding, `device/bgl.rs`), one buffer index per buffer entry. The
/// sizes buffer comes after them all and is never set for a passthrough pipeline (it has no sized
/// bindings). Returns the immediates slot and `(group, binding) -> (index, read_only)`.
fn metal_buffer_slots(
    groups: &[Vec<wgpu::BindGroupLayoutEntry>],
    immediate_size: u32,
) -> (Option<u32>, MetalSlots) {
    let mut next = 0;
    let immediates = (immediate_size != 0).then(|| {
        next += 1;
        0
    });
    let mut slots = MetalSlots::new();
    for (group, entries) in groups.iter().enumerate() {
        let mut entries = entries.clone();
        entries.sort_by_key(|e| e.binding);
        for e in entries {
            if !e.visibility.contains(wgpu::ShaderStages::COMPUTE) {
                continue;
            }
            let wgpu::BindingType::Buffer { ty, .. } = e.ty else {
                panic!("binding {group}.{}: only buffers are modelled", e.binding);
            };
            assert_eq!(e.count, None, "binding arrays are not modelled");
            let read_only = match ty {
                wgpu::BufferBindingType::Storage { read_only } => read_only,
                wgpu::BufferBindingType::Uniform => true,
            };
            slots.insert((group as u32, e.binding), (next, read_only));
            next += 1;
        }
    }
    (immediates, slots)
}

/// The `[[buffer(i)]]` parameters of entry point `entry` in MSL `source`, as (name, MSL type, i).
fn metal_buffer_params(source: &str, entry: &str) -> Vec<(String, String, u32)> {
    let head = format!("kernel void {entry}(");
    let start = source
        .find(&head)
        .unwrap_or_else(|| panic!("no `{head}` in the source"))
        + head.len();
    let mut depth = 1;
    let end = start
        + source[start..]
            .find(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .expect("unbalanced parameter list");
    let mut params = Vec::new();
    for p in source[start..end].split(',') {
        let p = p.trim();
        let Some(at) = p.find("[[buffer(") else {
            continue;
        };
        let index = p[at + "[[buffer(".len()..]
            .split(')')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("bad buffer attribute in `{p}`"));
        let decl = p[..at].trim();
        let split = decl
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or_else(|| panic!("no type in `{p}`"));
        let (ty, name) = decl.split_at(split + 1);
        params.push((name.to_string(), ty.trim().to_string(), index));
    }
    params
}

/// Passthrough modules bypass naga, so nothing remaps their buffer indices: each MSL kernel's
/// `[[buffer(i)]]` must be the index wgpu-hal's Metal backend gives the resource the engine binds
/// there, derived here from the very layout entries the engine creates (`pipelines.rs` group 0,
/// `group.rs` group 1, the pipeline layout's immediate size) for the params mode MSL runs in.
/// Also: read-only layout entries are `device const` and writable ones are not.
#[test]
fn msl_buffer_indices_are_the_ones_wgpu_hal_metal_assigns() {
    use crate::pipelines::{group0_entries, immediate_size};

    let mode = ParamsMode::Immediates;
    assert_eq!(
        unavailable(wgpu::Backend::Metal, ALL_FEATURES, mode, None),
        None,
        "MSL runs in this params mode"
    );
    for (kernel, desc) in KERNELS {
        let name = desc.name;
        let groups = [
            group0_entries(kernel.bindings),
            crate::group::layout_entries(mode),
        ];
        let (immediates, slots) = metal_buffer_slots(&groups, immediate_size(mode));
        let params = metal_buffer_params(desc.source, kernel.entry);
        assert_eq!(
            params.len(),
            desc.bindings.len(),
            "{name}: buffer parameters of `{}`",
            kernel.entry
        );
        // What the engine binds at each resource: group-0 binding i = the i-th storage buffer of
        // the descriptor (the order `msl/ops.rs` binds them in), status = group 1 binding 1.
        let mut storage = 0;
        for b in desc.bindings {
            let (index, read_only) = match b.kind {
                msl::BindingKind::Params => (immediates.expect("immediates in the layout"), true),
                msl::BindingKind::StorageRead | msl::BindingKind::StorageReadWrite => {
                    storage += 1;
                    slots[&(0, storage - 1)]
                }
                msl::BindingKind::Status => slots[&(1, 1)],
            };
            let (_, ty, got) = params
                .iter()
                .find(|(n, ..)| n == b.name)
                .unwrap_or_else(|| panic!("{name}: no buffer parameter `{}`", b.name));
            assert_eq!(
                *got, index,
                "{name}: `{}` is [[buffer({got})]], wgpu-hal binds it at {index}",
                b.name
            );
            if b.kind != msl::BindingKind::Params {
                assert_eq!(
                    ty.starts_with("device const "),
                    read_only,
                    "{name}: `{ty} {}` for a layout entry with read_only = {read_only}",
                    b.name
                );
            }
        }
        assert_eq!(
            storage as usize,
            kernel.bindings.len(),
            "{name}: group-0 bindings"
        );
        assert_eq!(
            slots.len(),
            desc.bindings.len() - 1,
            "{name}: layout resources"
        );
    }
}

/// The uniform params mode's layout (params arena at group 1 binding 0, no immediates) would move
/// every MSL buffer index, which is why MSL is never tried in that mode.
#[test]
fn uniform_params_mode_would_misplace_msl_buffers() {
    use crate::pipelines::{group0_entries, immediate_size};

    let mode = ParamsMode::Uniform;
    let groups = [
        group0_entries(GEMV.bindings),
        crate::group::layout_entries(mode),
    ];
    let (immediates, slots) = metal_buffer_slots(&groups, immediate_size(mode));
    assert_eq!(immediates, None);
    assert_eq!(slots[&(0, 0)].0, 0, "x would be at buffer(0), not 1");
    assert!(unavailable(wgpu::Backend::Metal, ALL_FEATURES, mode, None).is_some());
}
