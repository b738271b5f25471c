//! A development probe: run an edited copy of a kernel without rebuilding (cargo feature
//! `kernel-override`, off by default; `bitnet-bench --features kernel-override` passes it on).
//!
//! On the H200 a kernel's speed moved with changes its WGSL meant to be neutral (the fused GEMV
//! got 0.35 µs slower per call when its loads moved into a hook function), so kernel work is
//! measured variant against variant, alternating, in one device command. With the feature on and
//! [`KERNEL_OVERRIDE_ENV`] naming a directory, a file `<kernel name>.wgsl` there replaces that
//! kernel's whole WGSL (as `kernel_stats --source <name>` prints it) when its module is built.
//! An overridden kernel is trusted as the built-in ones are (no forced loop bounding, see
//! `pipelines.rs`), and the calibration and autotune caches do not see it: run probes with
//! `BITNET_TUNE_CACHE=off` and `BITNET_CALIBRATION_CACHE=off`. Without the feature the variable
//! is ignored.

use std::borrow::Cow;
use std::path::Path;

use bitnet_kernels_wgsl::KernelSource;

/// Environment variable: a directory of `<kernel name>.wgsl` files that replace those kernels'
/// sources (feature `kernel-override` only).
pub const KERNEL_OVERRIDE_ENV: &str = "BITNET_KERNEL_OVERRIDE_DIR";

/// The WGSL the engine compiles for `source`: its own, or with the feature on an override file.
pub(crate) fn kernel_text(source: KernelSource) -> Cow<'static, str> {
    let dir = match cfg!(feature = "kernel-override") {
        true => std::env::var(KERNEL_OVERRIDE_ENV).ok(),
        false => None,
    };
    // Read as every BITNET_* value (lib.rs): blanks around it ignored, blank means unset.
    let Some(dir) = dir.as_deref().map(str::trim).filter(|d| !d.is_empty()) else {
        return Cow::Borrowed(source.source);
    };
    match read_override(Path::new(dir), source.name) {
        Some(text) => {
            log::warn!(
                "kernel {} compiled from {}/{}.wgsl ({KERNEL_OVERRIDE_ENV})",
                source.name,
                Path::new(dir).display(),
                source.name
            );
            Cow::Owned(text)
        }
        None => Cow::Borrowed(source.source),
    }
}

/// `dir/<name>.wgsl` if it exists and is readable text.
fn read_override(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(format!("{name}.wgsl"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_file_is_read_by_kernel_name_and_others_are_not() {
        let dir = std::env::temp_dir().join(format!("bitnet-override-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("util_copy.wgsl"), "// edited\n").unwrap();
        assert_eq!(
            read_override(&dir, "util_copy").as_deref(),
            Some("// edited\n")
        );
        assert_eq!(read_override(&dir, "util_fill"), None);
        assert_eq!(read_override(&dir.join("missing"), "util_copy"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_the_variable_a_kernel_keeps_its_own_source() {
        if std::env::var_os(KERNEL_OVERRIDE_ENV).is_none() {
            let k = bitnet_kernels_wgsl::util::COPY;
            assert!(matches!(kernel_text(k), Cow::Borrowed(s) if s == k.source));
        }
    }
}
