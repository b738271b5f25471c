//! Parses and validates every WGSL kernel of `bitnet_kernels_wgsl::all()` with naga, so a broken
//! shader fails `cargo test` even without a GPU.
//!
//! Each kernel is validated with only the capabilities its source asks for (subgroup builtins,
//! `var<immediate>`, `enable f16;`), which proves that the fallback variants really run on
//! adapters without those features. Every variant is its own entry of `all()`, and each is
//! validated in both forms the engine compiles: as written (params in a uniform buffer) and with
//! the params declaration rewritten to `var<immediate>` (engine/src/pipelines.rs). It also checks
//! the WebGPU default compute limits the engine relies on (workgroup size and storage).

use bitnet_kernels_wgsl::{KernelSource, all, bitnet, tensor};
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// WebGPU default `max_compute_invocations_per_workgroup`.
const MAX_INVOCATIONS: u32 = 256;
/// WebGPU default `max_compute_workgroup_size_{x,y,z}`.
const MAX_WORKGROUP_DIMS: [u32; 3] = [256, 256, 64];
/// WebGPU default `max_compute_workgroup_storage_size` in bytes.
const MAX_WORKGROUP_STORAGE: u32 = 16384;

/// The params declaration every kernel writes (`PARAMS_UNIFORM_DECL` in engine/src/pipelines.rs).
const PARAMS_UNIFORM_DECL: &str = "@group(1) @binding(0) var<uniform> params: Params;";
/// What the engine rewrites it to on devices with immediates.
const PARAMS_IMMEDIATE_DECL: &str = "var<immediate> params: Params;";

/// The source with `//` comments removed, so feature detection only sees code.
fn code_only(source: &str) -> String {
    source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The naga capabilities a kernel's source requests.
fn capabilities_of(source: &str) -> Capabilities {
    let code = code_only(source);
    let mut caps = Capabilities::empty();
    if code.contains("subgroup") {
        caps |= Capabilities::SUBGROUP;
    }
    if code.contains("var<immediate>") {
        caps |= Capabilities::IMMEDIATES;
    }
    if code.contains("enable f16") {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if code.contains("enable wgpu_cooperative_matrix") {
        caps |= Capabilities::COOPERATIVE_MATRIX;
    }
    if code.contains("@coherent") {
        caps |= Capabilities::MEMORY_DECORATION_COHERENT;
    }
    caps
}

/// Parses and validates one kernel; returns the module on success, a readable message otherwise.
fn validate(kernel: &KernelSource) -> Result<naga::Module, String> {
    validate_source(kernel.name, kernel.source)
}

/// Parses and validates one WGSL source with the capabilities it requests.
fn validate_source(name: &str, source: &str) -> Result<naga::Module, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: parse error:\n{}", e.emit_to_string(source)))?;
    Validator::new(ValidationFlags::all(), capabilities_of(source))
        .validate(&module)
        .map_err(|e| format!("{name}: validation error:\n{}", e.emit_to_string(source)))?;
    Ok(module)
}

/// Validates the immediates form of a kernel that takes params; a kernel declaring params any
/// other way than [`PARAMS_UNIFORM_DECL`] would silently miss the engine's rewrite.
fn validate_immediates(kernel: &KernelSource) -> Result<(), String> {
    if !code_only(kernel.source).contains("params") {
        return Ok(());
    }
    if !kernel.source.contains(PARAMS_UNIFORM_DECL) {
        return Err(format!(
            "{}: params not declared as `{PARAMS_UNIFORM_DECL}`",
            kernel.name
        ));
    }
    let rewritten = kernel
        .source
        .replace(PARAMS_UNIFORM_DECL, PARAMS_IMMEDIATE_DECL);
    validate_source(&format!("{} (immediates)", kernel.name), &rewritten).map(drop)
}

/// Checks the default WebGPU compute limits for every compute entry point.
fn check_limits(kernel: &KernelSource, module: &naga::Module) -> Result<(), String> {
    let gctx = module.to_ctx();
    let storage: u32 = module
        .global_variables
        .iter()
        .filter(|(_, var)| var.space == naga::AddressSpace::WorkGroup)
        .map(|(_, var)| module.types[var.ty].inner.size(gctx))
        .sum();
    // The cooperative-matrix GEMMs (f16, and the int8 skeleton): 512 threads, their own bytes.
    let coop_bytes = if kernel.name == bitnet::BITLINEAR_GEMM_COOP_SUBGROUP.name {
        Some(bitnet::GEMM_COOP_WORKGROUP_BYTES)
    } else if kernel.name == bitnet::BITLINEAR_GEMM_COOP_I8_SUBGROUP.name
        || kernel.name == bitnet::BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP.name
    {
        Some(bitnet::GEMM_COOP_I8_WORKGROUP_BYTES)
    } else {
        None
    };
    let coop = coop_bytes.is_some();
    let limit = if let Some(bytes) = coop_bytes {
        // The engine checks the device limit before it plans this kernel (cooperative-matrix
        // devices: the H100 / H200 offer 48 KiB); its own figure must be what the module declares.
        assert_eq!(storage, bytes, "{}", kernel.name);
        bytes
    } else if kernel.name == tensor::MATMUL_F32_GEMV_WIDE.name {
        // The engine checks the device limit before it picks the 4 × 256 matmul tile; its own
        // figure must be what the module declares.
        let bytes = tensor::MATMUL_GEMV_WIDE_WORKGROUP_BYTES;
        assert_eq!(storage, bytes, "{}", kernel.name);
        bytes
    } else if kernel.name == bitnet::BITLINEAR_GEMV_LEAN_SUBGROUP.name {
        // The engine checks the device limit before it plans this kernel; its own figure must
        // be what the module declares.
        assert_eq!(
            storage,
            bitnet::GEMV_LEAN_WORKGROUP_BYTES,
            "{}",
            kernel.name
        );
        bitnet::GEMV_LEAN_WORKGROUP_BYTES
    } else {
        MAX_WORKGROUP_STORAGE
    };
    if storage > limit {
        return Err(format!(
            "{}: {storage} bytes of workgroup storage",
            kernel.name
        ));
    }
    let compute: Vec<_> = module
        .entry_points
        .iter()
        .filter(|ep| ep.stage == naga::ShaderStage::Compute)
        .collect();
    if compute.is_empty() {
        return Err(format!("{}: no compute entry point", kernel.name));
    }
    for ep in compute {
        let size = ep.workgroup_size;
        let invocations: u32 = size.iter().product();
        if coop {
            // Also checked against the device by the engine; the figure must match.
            let threads = if kernel.name == bitnet::BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP.name {
                bitnet::GEMM_COOP_I8_N96_THREADS
            } else {
                bitnet::GEMM_COOP_THREADS
            };
            assert_eq!(size, [threads, 1, 1], "{}", kernel.name);
            continue;
        }
        let dims_ok = size
            .iter()
            .zip(MAX_WORKGROUP_DIMS)
            .all(|(s, max)| *s <= max);
        if invocations > MAX_INVOCATIONS || !dims_ok {
            return Err(format!(
                "{}: workgroup size {size:?} exceeds the defaults",
                kernel.name
            ));
        }
    }
    Ok(())
}

#[test]
fn every_kernel_parses_and_validates() {
    let kernels = all();
    assert!(!kernels.is_empty(), "no kernels registered");
    let failures: Vec<String> = kernels
        .iter()
        .filter_map(|k| {
            validate(k)
                .and_then(|m| check_limits(k, &m))
                .and_then(|()| validate_immediates(k))
                .err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} kernel(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn kernel_names_are_unique() {
    let kernels = all();
    let mut names: Vec<_> = kernels.iter().map(|k| k.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), kernels.len(), "duplicate kernel names");
}

#[test]
fn fallback_variants_need_no_subgroups() {
    // The engine picks these on adapters without SUBGROUP; validate() already used the detected
    // capabilities, this pins down that detection did not find subgroup use in them.
    for kernel in bitnet::ALL
        .iter()
        .filter(|k| !k.name.ends_with("_subgroup"))
    {
        let caps = capabilities_of(kernel.source);
        assert!(
            !caps.contains(Capabilities::SUBGROUP),
            "{} uses subgroups",
            kernel.name
        );
    }
    let sub = capabilities_of(bitnet::BITLINEAR_GEMV_SUBGROUP.source);
    assert!(sub.contains(Capabilities::SUBGROUP));
}

#[test]
fn bitlinear_inv_127_literal_is_exact() {
    // layout.rs: INV_127 = 1.0f32 / 127.0, rounded once. The WGSL constant must be those bits.
    let want = 1.0f32 / 127.0;
    for kernel in bitnet::ALL
        .iter()
        .filter(|k| k.name.starts_with("bitlinear"))
    {
        let module = validate(kernel).unwrap();
        let (_, constant) = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some("INV_127"))
            .unwrap_or_else(|| panic!("{}: no INV_127", kernel.name));
        match module.global_expressions[constant.init] {
            naga::Expression::Literal(naga::Literal::F32(v)) => {
                assert_eq!(v.to_bits(), want.to_bits(), "{}", kernel.name)
            }
            ref other => panic!("{}: INV_127 is {other:?}", kernel.name),
        }
    }
}

#[test]
fn a_broken_kernel_is_rejected() {
    // Guards the harness itself: a type error and a missing capability must both fail.
    let type_error = KernelSource {
        name: "broken_type",
        source: "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
    };
    assert!(validate(&type_error).is_err());
    let needs_subgroups = KernelSource {
        name: "broken_caps",
        source: "@compute @workgroup_size(32) fn main(@builtin(subgroup_id) s: u32) { _ = s; }",
    };
    let module = naga::front::wgsl::parse_str(needs_subgroups.source).unwrap();
    let result = Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module);
    assert!(
        result.is_err(),
        "subgroup builtins validated without SUBGROUP"
    );
    assert!(validate(&needs_subgroups).is_ok());
}

#[test]
fn batched_gemv_constants_match_the_engine() {
    // The engine sizes the batched and staged GEMVs' K tiles (and their lanes) from
    // GEMV_BATCH_TILE_VEC4 and GEMV_MAX_M; the WGSL must use the same values.
    let kernel = bitnet::BITLINEAR_GEMV_BATCH_SUBGROUP;
    let module = validate(&kernel).unwrap();
    let value = |name: &str| {
        let (_, c) = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no {name}", kernel.name));
        match module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => v,
            ref other => panic!("{}: {name} is {other:?}", kernel.name),
        }
    };
    assert_eq!(value("GB_TILE"), bitnet::GEMV_BATCH_TILE_VEC4);
    assert_eq!(value("GB_MAX_M"), bitnet::GEMV_MAX_M);
    let staged = bitnet::BITLINEAR_GEMV_STAGED_SUBGROUP;
    let module = validate(&staged).unwrap();
    for (name, want) in [
        ("GS_TILE", bitnet::GEMV_BATCH_TILE_VEC4),
        ("GS_MAX_M", bitnet::GEMV_MAX_M),
    ] {
        let (_, c) = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no {name}", staged.name));
        assert!(
            matches!(
                module.global_expressions[c.init],
                naga::Expression::Literal(naga::Literal::U32(v)) if v == want
            ),
            "{}: {name}",
            staged.name
        );
    }
}
