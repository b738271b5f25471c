//! Static proof of the MSL kernels: every shipped source compiles with clang as C++14 (MSL's base
//! language) against the Metal compatibility header, and everything clang cannot check — buffer
//! attributes, documented binding tables, the descriptors the engine builds pipeline layouts from,
//! the layout constants — agrees with the Rust side and with `bitnet_cpu_ref::layout`.

mod support;

use bitnet_cpu_ref::layout;
use bitnet_kernels_msl::dispatch::{
    GEMM_MAX_K, GEMM_TILE, GEMV_MAX_K, GEMV_ROWS_PER_GROUP, SUM_BLOCK,
};
use bitnet_kernels_msl::{ALL, BindingKind, MslKernel, PRELUDE};
use support::signature::{Attr, constant_u32, documented_bindings, kernel_entries, kernel_params};

/// Every `.metal` file under `shaders/`, as (file name, text).
fn shader_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(support::shaders_dir())
        .expect("read shaders/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "metal"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The kernel's own file (the part of its source after the prelude).
fn kernel_file(k: &MslKernel) -> &'static str {
    k.source
        .strip_prefix(PRELUDE)
        .unwrap_or_else(|| panic!("{}: source does not start with PRELUDE", k.name))
}

#[test]
fn every_shader_file_is_shipped() {
    let files = shader_files();
    assert!(
        files.len() >= ALL.len() + 3,
        "expected the prelude files and one file per kernel"
    );
    for (name, text) in &files {
        let shipped = PRELUDE.contains(text.as_str()) || ALL.iter().any(|k| kernel_file(k) == text);
        assert!(
            shipped,
            "shaders/{name} is in no shipped source, so no test would compile it"
        );
    }
}

/// Each shipped source compiles as C++14 with Metal's address spaces as distinct clang address
/// spaces (`METAL_EMU_ADDRESS_SPACES`), so a pointer that drops or changes its address space —
/// an error on Metal — is an error here too. (The plain mode is compiled by the harness builds.)
#[test]
fn sources_compile_as_cpp14() {
    let Some(cxx) = support::clang::require() else {
        return;
    };
    let dir = support::work_dir().join("syntax");
    std::fs::create_dir_all(&dir).unwrap();
    let sources =
        std::iter::once(("prelude", PRELUDE)).chain(ALL.iter().map(|k| (k.name, k.source)));
    // One clang per source, all at once (each is a separate translation unit, as on Metal).
    std::thread::scope(|scope| {
        for (name, source) in sources {
            let (cxx, dir) = (&cxx, &dir);
            scope.spawn(move || {
                let path = dir.join(format!("{name}.metal"));
                std::fs::write(&path, source).unwrap();
                let mut args: Vec<String> = vec![
                    "-x".into(),
                    "c++".into(),
                    "-std=c++14".into(),
                    "-fsyntax-only".into(),
                    "-DMETAL_EMU_ADDRESS_SPACES".into(),
                ];
                args.extend(support::clang::kernel_flags());
                args.push(path.display().to_string());
                support::clang::compile(cxx, &args, &format!("compiling {name} as C++14"));
            });
        }
    });
}

#[test]
fn descriptors_match_kernel_signatures() {
    for k in ALL {
        assert_eq!(
            kernel_entries(k.source),
            vec![k.entry_point.to_string()],
            "{}: one entry point",
            k.name
        );
        assert_eq!(k.name, format!("{}_msl", k.entry_point));
        let params =
            kernel_params(k.source, k.entry_point).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        let buffers: Vec<_> = params
            .iter()
            .filter(|p| matches!(p.attr, Attr::Buffer(_)))
            .collect();
        assert_eq!(
            buffers.len(),
            k.bindings.len(),
            "{}: buffer parameter count",
            k.name
        );
        for (i, (p, b)) in buffers.iter().zip(k.bindings).enumerate() {
            let at = format!("{} buffer({})", k.name, b.index);
            assert_eq!(
                b.index as usize, i,
                "{at}: bindings must be listed in index order from 0"
            );
            assert_eq!(
                p.attr,
                Attr::Buffer(b.index),
                "{at}: parameter `{}` order",
                p.name
            );
            assert_eq!(p.name, b.name, "{at}: name");
            assert_eq!(p.ty, b.msl_type, "{at}: type");
            let kind_ok = match b.kind {
                BindingKind::Params => p.ty.starts_with("constant ") && p.ty.ends_with('&'),
                BindingKind::StorageRead => {
                    p.ty.starts_with("device const ") && p.ty.ends_with('*')
                }
                BindingKind::StorageReadWrite => {
                    p.ty.starts_with("device ")
                        && !p.ty.contains("const")
                        && !p.ty.contains("atomic")
                        && p.ty.ends_with('*')
                }
                BindingKind::Status => p.ty == "device atomic_uint*",
            };
            assert!(
                kind_ok,
                "{at}: kind {:?} does not match MSL type `{}`",
                b.kind, p.ty
            );
        }
        // The engine's convention: params, then group-0 storage, then the status slot.
        let kinds: Vec<_> = k.bindings.iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds.first(),
            Some(&BindingKind::Params),
            "{}: params at buffer(0)",
            k.name
        );
        assert_eq!(
            kinds.last(),
            Some(&BindingKind::Status),
            "{}: status slot last",
            k.name
        );
        assert_eq!(
            k.storage().count(),
            k.bindings.len() - 2,
            "{}: only storage in between",
            k.name
        );
        assert!(
            !k.status_words.is_empty() && k.status_words.len() <= 4,
            "{}: status words",
            k.name
        );

        // Workgroup size: 1-D, a multiple of the simdgroup width, equal to the kernel's constant.
        let (x, y, z) = k.workgroup_size;
        assert!(
            y == 1 && z == 1 && x % 32 == 0,
            "{}: workgroup size {:?}",
            k.name,
            k.workgroup_size
        );
        assert_eq!(
            constant_u32(k.source, "THREADS_PER_GROUP"),
            Some(x),
            "{}: THREADS_PER_GROUP",
            k.name
        );
    }
}

#[test]
fn binding_tables_in_metal_files_match_descriptors() {
    for k in ALL {
        let documented =
            documented_bindings(kernel_file(k)).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        let expected: Vec<_> = k
            .bindings
            .iter()
            .map(|b| (b.index, b.msl_type.to_string(), b.name.to_string()))
            .collect();
        let got: Vec<_> = documented
            .into_iter()
            .map(|d| (d.index, d.ty, d.name))
            .collect();
        assert_eq!(
            got, expected,
            "{}: the `// buffer(i)  type  name:` table in the .metal file",
            k.name
        );
    }
}

#[test]
fn constants_match_layout_and_dispatch() {
    assert_eq!(
        constant_u32(PRELUDE, "SCALE_EPS_BITS"),
        Some(layout::SCALE_EPS.to_bits())
    );
    assert_eq!(
        constant_u32(PRELUDE, "INV_127_BITS"),
        Some(layout::INV_127.to_bits())
    );
    assert_eq!(constant_u32(PRELUDE, "HALF_BITS"), Some(0.5f32.to_bits()));
    assert_eq!(
        constant_u32(PRELUDE, "WEIGHTS_PER_WORD"),
        Some(layout::WEIGHTS_PER_WORD as u32)
    );
    assert_eq!(
        constant_u32(PRELUDE, "ZERO_WEIGHT_WORD"),
        Some(layout::pack_word([0; 16]))
    );
    let sum = bitnet_kernels_msl::ABS_SUM_BLOCKS.source;
    assert_eq!(
        constant_u32(sum, "SUM_BLOCK"),
        Some(layout::SUM_BLOCK as u32)
    );
    assert_eq!(SUM_BLOCK, layout::SUM_BLOCK as u64);
    assert_eq!(
        constant_u32(sum, "THREADS_PER_GROUP"),
        Some(layout::SUM_LANES as u32)
    );
    assert_eq!(
        constant_u32(sum, "SUM_ROUNDS"),
        Some((layout::SUM_BLOCK / layout::SUM_LANES) as u32)
    );
    let gemv = bitnet_kernels_msl::BITLINEAR_GEMV.source;
    assert_eq!(constant_u32(gemv, "MAX_K"), Some(GEMV_MAX_K as u32));
    assert_eq!(
        constant_u32(gemv, "ROWS_PER_GROUP"),
        Some(GEMV_ROWS_PER_GROUP as u32)
    );
    assert_eq!(
        constant_u32(gemv, "ROWS_PER_SIMDGROUP")
            .zip(constant_u32(gemv, "SIMDGROUPS"))
            .map(|(r, s)| r * s),
        Some(GEMV_ROWS_PER_GROUP as u32)
    );
    let gemm = bitnet_kernels_msl::BITLINEAR_GEMM.source;
    assert_eq!(constant_u32(gemm, "MAX_K"), Some(GEMM_MAX_K as u32));
    assert_eq!(constant_u32(gemm, "TILE"), Some(GEMM_TILE as u32));
    // The exactness bound of the simdgroup-matrix GEMM: 128 * K < 2^24.
    const { assert!(128 * GEMM_MAX_K < 1 << 24 && 128 * (GEMM_MAX_K + 1) >= 1 << 24) };
}
