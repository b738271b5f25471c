//! The int8 retyping on the real skeleton (both params forms): every matrix type, capability and
//! multiply-add as `spirv.rs` promises, and clear errors for modules that are not skeletons; and
//! `kernel_spirv` (override constants substituted, errors typed); and the barrier the atomic
//! chain kernel's cross-workgroup hand-off relies on.

use bitnet_kernels_wgsl::bitnet::{
    BITLINEAR_GEMM_COOP_I8_SUBGROUP, BITLINEAR_GEMV_FUSED_SUBGROUP, BITLINEAR_GEMV_SUBGROUP,
};

use super::*;
use crate::pipelines::{PARAMS_IMMEDIATE_DECL, PARAMS_UNIFORM_DECL};

/// Every instruction of `words` with opcode `op` (operands after the first word).
fn all(words: &[u32], op: u32) -> Vec<Vec<u32>> {
    instructions(words)
        .unwrap()
        .into_iter()
        .filter(|(o, _)| *o == op)
        .map(|(_, w)| w[1..].to_vec())
        .collect()
}

/// The value of u32 constant `id`.
fn value(words: &[u32], id: u32) -> u32 {
    all(words, OP_CONSTANT)
        .into_iter()
        .find(|w| w[1] == id)
        .map(|w| w[2])
        .unwrap()
}

/// The (width, signedness) of integer type `id`.
fn int_type(words: &[u32], id: u32) -> Option<(u32, u32)> {
    all(words, OP_TYPE_INT)
        .into_iter()
        .find(|w| w[0] == id)
        .map(|w| (w[1], w[2]))
}

fn check_retyped(source: &str) {
    let before = compile("skeleton", source, &[]).unwrap();
    let after = int8_coop_spirv("skeleton", source).unwrap();
    assert!(after[3] >= before[3], "id bound");
    assert!(
        all(&after, OP_CAPABILITY).contains(&vec![CAPABILITY_INT8]),
        "Int8 capability"
    );
    // Capabilities stay the module's first instructions.
    let insts = instructions(&after).unwrap();
    let last_cap = insts
        .iter()
        .rposition(|(op, _)| *op == OP_CAPABILITY)
        .unwrap();
    assert!(
        insts[..=last_cap]
            .iter()
            .all(|(op, _)| *op == OP_CAPABILITY)
    );

    let mut shapes: Vec<(u32, (u32, u32), u32, u32)> = all(&after, OP_TYPE_COOP_MATRIX)
        .into_iter()
        .map(|w| {
            let ty = int_type(&after, w[1]).expect("integer component");
            (
                value(&after, w[5]),
                ty,
                value(&after, w[3]),
                value(&after, w[4]),
            )
        })
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        vec![
            (USE_A, (8, 1), 16, 32),
            (USE_B, (8, 1), 32, 16),
            (USE_C, (32, 1), 16, 16)
        ]
    );
    let mul_adds = all(&after, OP_COOP_MUL_ADD);
    assert_eq!(mul_adds.len(), all(&before, OP_COOP_MUL_ADD).len());
    assert!(!mul_adds.is_empty());
    assert!(
        mul_adds
            .iter()
            .all(|w| w.len() == 6 && w[5] == SIGNED_OPERANDS)
    );
    // Nothing else changed: the same instructions, in the same order, minus the retyped ones.
    let kept = |words: &[u32]| -> Vec<u32> {
        instructions(words)
            .unwrap()
            .into_iter()
            .filter(|(op, _)| ![OP_TYPE_COOP_MATRIX, OP_COOP_MUL_ADD, OP_CAPABILITY].contains(op))
            .filter(|(op, w)| !(*op == OP_TYPE_INT && w[2] == 8))
            .flat_map(|(_, w)| w.to_vec())
            .collect()
    };
    let (b, a) = (kept(&before), kept(&after));
    // The retyping may add an i32 type and a constant 32; everything else is the same.
    assert!(
        a.len() >= b.len() && a.len() - b.len() <= 8,
        "{} vs {}",
        a.len(),
        b.len()
    );
}

#[test]
fn the_skeleton_is_retyped_to_int8_matrices_in_both_params_forms() {
    let source = BITLINEAR_GEMM_COOP_I8_SUBGROUP.source;
    assert!(source.contains(PARAMS_UNIFORM_DECL));
    check_retyped(source);
    check_retyped(&source.replace(PARAMS_UNIFORM_DECL, PARAMS_IMMEDIATE_DECL));
}

#[test]
fn modules_that_are_not_skeletons_are_refused() {
    let gemv = compile("gemv", BITLINEAR_GEMV_SUBGROUP.source, &[]).unwrap();
    let e = retype_int8(&gemv).unwrap_err();
    assert!(e.contains("found [0, 0, 0] types"), "{e}");
    assert!(
        retype_int8(&[1, 2, 3])
            .unwrap_err()
            .contains("not a SPIR-V module")
    );
    let mut overlong = gemv.clone();
    overlong.push(head(OP_CAPABILITY, 3));
    assert!(retype_int8(&overlong).unwrap_err().contains("malformed"));
    assert!(
        int8_coop_spirv("broken", "fn main( {")
            .unwrap_err()
            .starts_with("broken: ")
    );
}

#[test]
fn the_driver_query_agrees_with_the_device() {
    // CI's lavapipe has no cooperative matrices: the query must say no (and not fail); where a
    // driver says yes, the device is Vulkan with cooperative matrices.
    let e = crate::test_gpu::gpu();
    let g = e.gpu_context().unwrap();
    let has = driver_has_int8_coop(&g.device);
    assert_eq!(has, g.caps.int8_coop);
    assert_eq!(has, e.info().int8_cooperative_matrices);
    if has {
        assert_eq!(g.adapter_info.backend, wgpu::Backend::Vulkan);
        assert!(g.caps.has(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX));
    }
    if !g.caps.has(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        assert!(!has);
    }
}

#[test]
fn kernel_spirv_substitutes_override_constants() {
    let fused = &BITLINEAR_GEMV_FUSED_SUBGROUP;
    let wide = crate::kernel_spirv(fused, &[("TPR", 32.0), ("DEPTH", 2.0)]).unwrap();
    let narrow = crate::kernel_spirv(fused, &[("TPR", 16.0), ("DEPTH", 1.0)]).unwrap();
    for words in [&wide, &narrow] {
        assert_eq!(words[0], MAGIC);
        // OpSpecConstantTrue / False / OpSpecConstant: none left, every override is a constant.
        for op in 48..=50 {
            assert!(all(words, op).is_empty(), "opcode {op}");
        }
    }
    assert_ne!(wide, narrow, "the constants reached the module");
    let unknown = crate::kernel_spirv(fused, &[("NO_SUCH", 1.0)]).unwrap_err();
    assert!(
        matches!(&unknown, crate::Error::PipelineCreation { kernel, message, .. }
            if *kernel == fused.name && message.contains("NO_SUCH")),
        "{unknown}"
    );
    let broken = bitnet_kernels_wgsl::KernelSource {
        name: "broken",
        source: "fn main( {",
    };
    assert!(matches!(
        crate::kernel_spirv(&broken, &[]),
        Err(crate::Error::PipelineCreation {
            kernel: "broken",
            ..
        })
    ));
}

/// The (descriptor set, binding) decorations of every resource variable in `words`, sorted.
fn resource_bindings(words: &[u32]) -> Vec<(u32, u32)> {
    const OP_DECORATE: u32 = 71;
    const DECORATION_BINDING: u32 = 33;
    const DECORATION_DESCRIPTOR_SET: u32 = 34;
    let decorations = all(words, OP_DECORATE);
    let of = |id: u32, what: u32| {
        decorations
            .iter()
            .find(|w| w[0] == id && w[1] == what)
            .map(|w| w[2])
    };
    let mut out: Vec<(u32, u32)> = decorations
        .iter()
        .filter(|w| w[1] == DECORATION_DESCRIPTOR_SET)
        .map(|w| (w[2], of(w[0], DECORATION_BINDING).expect("a binding")))
        .collect();
    out.sort_unstable();
    out
}

/// A passthrough module must say the Vulkan binding numbers wgpu gives its layout: each group's
/// bindings numbered densely in order. In immediates mode group 1 holds only the status words
/// (`@binding(1)`), which are Vulkan binding 0; in uniform mode the params come first. (The int8
/// GEMMs kept binding 1 there, and their non-finite flags were lost on the H200.)
#[test]
fn passthrough_modules_use_the_vulkan_binding_numbers() {
    let source = BITLINEAR_GEMM_COOP_I8_SUBGROUP.source;
    let uniform = int8_coop_spirv("uniform", source).unwrap();
    let immediates = int8_coop_spirv(
        "immediates",
        &source.replace(PARAMS_UNIFORM_DECL, PARAMS_IMMEDIATE_DECL),
    )
    .unwrap();
    let group0: Vec<(u32, u32)> = (0..5).map(|b| (0, b)).collect();
    assert_eq!(
        resource_bindings(&uniform),
        [group0.clone(), vec![(1, 0), (1, 1)]].concat()
    );
    assert_eq!(
        resource_bindings(&immediates),
        [group0, vec![(1, 0)]].concat()
    );
}

/// The atomic form of the chain kernel hands a link's outputs to the next link's workgroups
/// through relaxed atomics between `storageBarrier`s; that is a sound release/acquire pattern
/// only because naga lowers `storageBarrier` to a control barrier at **Device** memory scope
/// with AcquireRelease | UniformMemory semantics (the WGSL spec only promises workgroup scope,
/// and Tint emits that). A naga that narrowed it would make consumers read stale outputs
/// without an error: this guard fails first.
#[test]
fn the_atomic_chain_kernels_storage_barriers_order_device_memory() {
    const OP_CONTROL_BARRIER: u32 = 224;
    const SCOPE_DEVICE: u32 = 1;
    const ACQUIRE_RELEASE: u32 = 0x8;
    const UNIFORM_MEMORY: u32 = 0x40;
    let words =
        crate::kernel_spirv(&bitnet_kernels_wgsl::bitnet::BITLINEAR_CHAIN_SUBGROUP, &[]).unwrap();
    let storage: Vec<(u32, u32)> = all(&words, OP_CONTROL_BARRIER)
        .into_iter()
        .map(|w| (value(&words, w[1]), value(&words, w[2])))
        .filter(|&(_, semantics)| semantics & UNIFORM_MEMORY != 0)
        .collect();
    assert!(!storage.is_empty(), "no storage barrier found");
    for (scope, semantics) in storage {
        assert_eq!(scope, SCOPE_DEVICE, "memory scope");
        assert_ne!(semantics & ACQUIRE_RELEASE, 0, "semantics {semantics:#x}");
    }
}
