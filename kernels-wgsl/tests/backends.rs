//! Translates every WGSL kernel with naga's backends — SPIR-V (Vulkan), MSL (Metal) and HLSL
//! (DX12) — the way wgpu does at pipeline creation, so a kernel that validates but that a backend
//! cannot write (or panics on) fails `cargo test` on any machine, without those GPUs.
//!
//! Both forms the engine compiles are translated: as written (params in a uniform buffer) and with
//! the params declaration rewritten to `var<immediate>` (engine/src/pipelines.rs). Override
//! constants take their defaults (the translation does not depend on their values).
//! Language levels: SPIR-V 1.3 (subgroup operations), MSL 2.4 and HLSL shader model 6.4 (subgroup
//! operations, f16 and packed int8 dot products; wgpu needs DXC for these), plus shader model 5.1
//! (FXC) for the kernels that use neither subgroups nor f16. Cooperative matrices are only offered
//! on Vulkan, so kernels using them are translated to SPIR-V only.

use bitnet_kernels_wgsl::{KernelSource, all};
use naga::back::{hlsl, msl, pipeline_constants, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// The params declaration every kernel writes (`PARAMS_UNIFORM_DECL` in engine/src/pipelines.rs).
const PARAMS_UNIFORM_DECL: &str = "@group(1) @binding(0) var<uniform> params: Params;";
/// What the engine rewrites it to on devices with immediates.
const PARAMS_IMMEDIATE_DECL: &str = "var<immediate> params: Params;";

/// Everything a kernel's source may request (validation fails without it).
fn capabilities() -> Capabilities {
    Capabilities::SUBGROUP
        | Capabilities::SHADER_FLOAT16
        | Capabilities::COOPERATIVE_MATRIX
        | Capabilities::IMMEDIATES
        | Capabilities::MEMORY_DECORATION_COHERENT
}

/// `source` parsed, validated and with its override constants resolved to their defaults.
fn resolved(name: &str, source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: parse: {}", e.emit_to_string(source)))?;
    let info = Validator::new(ValidationFlags::all(), capabilities())
        .validate(&module)
        .map_err(|e| format!("{name}: validate: {e:?}"))?;
    let (module, info) = pipeline_constants::process_overrides(
        &module,
        &info,
        None,
        &naga::back::PipelineConstants::default(),
    )
    .map_err(|e| format!("{name}: overrides: {e}"))?;
    Ok((module.into_owned(), info.into_owned()))
}

/// Writes one kernel, in both params forms, with every backend it can run on; the first failure
/// as text.
fn translate(kernel: &KernelSource) -> Result<(), String> {
    translate_source(kernel.name, kernel.source)?;
    if kernel.source.contains(PARAMS_UNIFORM_DECL) {
        let rewritten = kernel
            .source
            .replace(PARAMS_UNIFORM_DECL, PARAMS_IMMEDIATE_DECL);
        translate_source(&format!("{} (immediates)", kernel.name), &rewritten)?;
    }
    Ok(())
}

/// Writes one source with every backend it can run on.
fn translate_source(name: &str, source: &str) -> Result<(), String> {
    let (module, info) = resolved(name, source)?;
    let spv_options = spv::Options {
        lang_version: (1, 3),
        ..spv::Options::default()
    };
    spv::write_vec(&module, &info, &spv_options, None)
        .map_err(|e| format!("{name}: SPIR-V: {e}"))?;
    if source.contains("enable wgpu_cooperative_matrix") {
        return Ok(());
    }
    let msl_options = msl::Options {
        lang_version: (2, 4),
        ..msl::Options::default()
    };
    msl::write_string(
        &module,
        &info,
        &msl_options,
        &msl::PipelineOptions::default(),
    )
    .map_err(|e| format!("{name}: MSL: {e}"))?;
    // Where DX12 puts the immediates (root constants); unused by the uniform form.
    let immediates = hlsl::BindTarget {
        space: 0,
        register: 0,
        binding_array_size: None,
        dynamic_storage_buffer_offsets_index: None,
        restrict_indexing: false,
    };
    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_4,
        immediates_target: Some(immediates),
        ..hlsl::Options::default()
    };
    write_hlsl(name, &module, &info, &hlsl_options)?;
    // Without DXC, DX12 adapters compile with FXC (shader model 5.1) and offer neither subgroups
    // nor f16: the engine then runs the kernels that need neither, so those must translate there.
    let code = source.lines().map(|l| l.split("//").next().unwrap_or(""));
    if !code.clone().any(|l| l.contains("subgroup"))
        && !code.clone().any(|l| l.contains("enable f16"))
    {
        let fxc = hlsl::Options {
            shader_model: hlsl::ShaderModel::V5_1,
            ..hlsl_options
        };
        write_hlsl(&format!("{name} (SM 5.1)"), &module, &info, &fxc)?;
    }
    Ok(())
}

/// Writes `module` as HLSL with `options`.
fn write_hlsl(
    name: &str,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    options: &hlsl::Options,
) -> Result<(), String> {
    let mut out = String::new();
    hlsl::Writer::new(&mut out, options, &hlsl::PipelineOptions::default())
        .write(module, info, None)
        .map_err(|e| format!("{name}: HLSL: {e}"))?;
    Ok(())
}

#[test]
fn every_kernel_translates_for_vulkan_metal_and_dx12() {
    let failures: Vec<String> = all()
        .iter()
        .filter_map(|k| {
            std::panic::catch_unwind(|| translate(k))
                .unwrap_or_else(|_| Err(format!("{}: a naga backend panicked", k.name)))
                .err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} kernel(s) failed to translate:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tiled_attention_workgroup_bytes_match_the_engine_figure() {
    // The engine picks BQ by comparing `attention_tiled_workgroup_bytes` with the device limit,
    // so the figure must be what the module declares once its override constants are resolved
    // (the validation test sees the override-sized arrays unresolved).
    use bitnet_kernels_wgsl::tensor::{ATTENTION_TILED, attention_tiled_workgroup_bytes};
    let source = ATTENTION_TILED.source;
    let module = naga::front::wgsl::parse_str(source).expect("parse");
    let info = Validator::new(ValidationFlags::all(), capabilities())
        .validate(&module)
        .expect("validate");
    for (dim, bq) in [
        (32u32, 32u32),
        (32, 64),
        (64, 16),
        (64, 32),
        (64, 64),
        (128, 16),
        (128, 32),
    ] {
        let constants = naga::back::PipelineConstants::from([
            ("DIM".to_string(), f64::from(dim)),
            ("BQ".to_string(), f64::from(bq)),
        ]);
        let (m, _) = pipeline_constants::process_overrides(&module, &info, None, &constants)
            .unwrap_or_else(|e| panic!("DIM {dim} BQ {bq}: {e}"));
        let gctx = m.to_ctx();
        let bytes: u32 = m
            .global_variables
            .iter()
            .filter(|(_, var)| var.space == naga::AddressSpace::WorkGroup)
            .map(|(_, var)| m.types[var.ty].inner.size(gctx))
            .sum();
        assert_eq!(
            bytes,
            attention_tiled_workgroup_bytes(dim, bq),
            "DIM {dim} BQ {bq}"
        );
    }
}
