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
//! has no effect, which is logged once, as are a value that names no directory and an override
//! file that cannot be read.

use std::borrow::Cow;
use std::path::Path;

use bitnet_kernels_wgsl::KernelSource;

/// Environment variable: a directory of `<kernel name>.wgsl` files that replace those kernels'
/// sources (feature `kernel-override` only).
pub const KERNEL_OVERRIDE_ENV: &str = "BITNET_KERNEL_OVERRIDE_DIR";

/// The WGSL the engine compiles for `source`: its own, or with the feature on an override file.
/// A variable that cannot take effect (set without the feature, naming no directory, or naming a
/// file that cannot be read as text) is logged, never silently ignored: a probe that compared
/// the built-in kernel with itself would read as a measurement.
pub(crate) fn kernel_text(source: KernelSource) -> Cow<'static, str> {
    let value = std::env::var_os(KERNEL_OVERRIDE_ENV);
    // Read as every BITNET_* value (lib.rs): blanks around it ignored, blank means unset.
    let dir = value
        .as_ref()
        .map(|v| v.to_string_lossy().trim().to_owned())
        .filter(|d| !d.is_empty());
    let Some(dir) = dir else {
        return Cow::Borrowed(source.source);
    };
    if !cfg!(feature = "kernel-override") {
        warn_once(&format!(
            "{KERNEL_OVERRIDE_ENV} is set but this build lacks the `kernel-override` feature: \
             every kernel is the built-in one"
        ));
        return Cow::Borrowed(source.source);
    }
    let dir = Path::new(&dir);
    if !dir.is_dir() {
        warn_once(&format!(
            "{KERNEL_OVERRIDE_ENV}={} is not a directory: every kernel is the built-in one",
            dir.display()
        ));
        return Cow::Borrowed(source.source);
    }
    match read_override(dir, source.name) {
        Ok(Some(text)) => {
            log::warn!(
                "kernel {} compiled from {}/{}.wgsl ({KERNEL_OVERRIDE_ENV})",
                source.name,
                dir.display(),
                source.name
            );
            Cow::Owned(text)
        }
        Ok(None) => Cow::Borrowed(source.source),
        Err(e) => {
            log::warn!(
                "kernel {}: cannot read {}/{}.wgsl ({e}); the built-in kernel runs",
                source.name,
                dir.display(),
                source.name
            );
            Cow::Borrowed(source.source)
        }
    }
}

/// Logs `message` at warn the first time this process sees it.
pub(crate) fn warn_once(message: &str) {
    if crate::cache_file::first_sighting(KERNEL_OVERRIDE_ENV, message) {
        log::warn!("bitnet-wgpu: {message}");
    }
}

/// Environment variable (feature `kernel-override` only): the float matmul's output tile for
/// every shape, as rows × columns — `64x64`, `16x64`, `4x16` or `4x256` — or just the rows (the
/// first tile of `ops/matmul_tiles.rs` with that many: `4` is `4x16`), to time the tiles against
/// each other on one shape (`tile_for` chooses by the output's size otherwise).
pub const MATMUL_TILE_ENV: &str = "BITNET_MATMUL_TILE";

/// The tile [`MATMUL_TILE_ENV`] forces, if any, as (rows, columns if given), read once per
/// process (logged once when set without the feature or not in that form; `tile_for` logs one
/// that names no tile): every matmul call asks.
pub(crate) fn matmul_tile() -> Option<(u64, Option<u64>)> {
    static TILE: std::sync::OnceLock<Option<(u64, Option<u64>)>> = std::sync::OnceLock::new();
    *TILE.get_or_init(read_matmul_tile)
}

fn read_matmul_tile() -> Option<(u64, Option<u64>)> {
    let value = std::env::var(MATMUL_TILE_ENV).ok()?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if !cfg!(feature = "kernel-override") {
        warn_once(&format!(
            "{MATMUL_TILE_ENV} is set but this build lacks the `kernel-override` feature: \
             the matmul picks its tile by shape"
        ));
        return None;
    }
    let parsed = match value.split_once('x') {
        Some((rows, cols)) => rows.parse().ok().zip(cols.parse().ok().map(Some)),
        None => value.parse().ok().map(|rows| (rows, None)),
    };
    if parsed.is_none() {
        warn_once(&format!(
            "{MATMUL_TILE_ENV}={value:?} is not ROWSxCOLS or ROWS: the matmul picks its tile by \
             shape"
        ));
    }
    parsed
}

/// `dir/<name>.wgsl`: its text, `None` if there is no such file, or why it cannot be read (not
/// UTF-8, no permission).
fn read_override(dir: &Path, name: &str) -> Result<Option<String>, std::io::Error> {
    match std::fs::read_to_string(dir.join(format!("{name}.wgsl"))) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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
            read_override(&dir, "util_copy").unwrap().as_deref(),
            Some("// edited\n")
        );
        assert_eq!(read_override(&dir, "util_fill").unwrap(), None);
        assert_eq!(
            read_override(&dir.join("missing"), "util_copy").unwrap(),
            None
        );
        // A file that is there but not text is an error to report, not a missing override.
        std::fs::write(dir.join("util_fill.wgsl"), b"// \xff\n").unwrap();
        assert!(read_override(&dir, "util_fill").is_err());
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
