//! Unit tests of the pipeline cache.

/// `BITNET_SHADER_CHECKS` is read as every environment value is: blanks and case ignored.
#[test]
fn full_shader_checks_ignore_case_and_blanks() {
    for v in ["full", "FULL", " full", "Full\n"] {
        assert!(super::full_checks(Some(v)), "{v:?}");
    }
    for v in [None, Some(""), Some("0"), Some("fully")] {
        assert!(!super::full_checks(v), "{v:?}");
    }
}

/// A value other than `full` (or blank) is logged and ignored, not silently ignored.
#[test]
fn unknown_shader_checks_value_is_logged() {
    crate::cache_file::tests::warnings();
    assert!(!super::full_checks(Some(" fulll ")));
    let logged = crate::cache_file::tests::warnings();
    assert!(
        logged
            .iter()
            .any(|w| w.contains("BITNET_SHADER_CHECKS") && w.contains("fulll")),
        "{logged:?}"
    );
}

/// A pipeline that fails to build is tried once: a later lookup returns the same error at once
/// (no second compile, which would cost a shader compile on every call of its op and fail
/// again), and the stats count it.
#[test]
fn a_pipeline_that_failed_to_build_is_not_compiled_again() {
    const BROKEN: crate::kernel::Kernel = crate::kernel::Kernel::new(
        bitnet_kernels_wgsl::KernelSource {
            name: "test_broken_kernel",
            source: "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
        },
        "main",
        &[],
    );
    let e = crate::test_gpu::gpu();
    let cache = &e.gpu_context().expect("a GPU engine").pipelines;
    let before = cache.stats();
    let first = cache.get(&BROKEN, &[]).err().expect("the kernel is broken");
    let again = cache.get(&BROKEN, &[]).err().expect("still broken");
    assert!(matches!(
        first,
        crate::Error::PipelineCreation {
            kernel: "test_broken_kernel",
            ..
        }
    ));
    assert_eq!(again, first);
    let after = cache.stats();
    assert_eq!(after.failed, before.failed + 1);
    assert_eq!(after.compiled, before.compiled);
}
