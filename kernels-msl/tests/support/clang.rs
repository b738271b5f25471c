//! Finding clang++ — loudly. These checks are the only proof the Metal kernels get on a machine
//! without a Mac, so a missing compiler is a test failure, never a silent skip.
//!
//! `BITNET_CLANGXX` names the compiler (default `clang++`). A developer without clang may opt out
//! explicitly with `BITNET_SKIP_MSL_EMULATION=1`: the tests then pass with a warning on stderr.
//! The opt-out is refused when `CI` is set, so CI always runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable naming the C++ compiler.
pub const CLANGXX_ENV: &str = "BITNET_CLANGXX";
/// Environment variable opting out of the clang-based checks (refused under `CI`).
pub const SKIP_ENV: &str = "BITNET_SKIP_MSL_EMULATION";

/// The clang++ to use, or `None` when the developer explicitly opted out. Panics with
/// instructions when clang++ is missing and no opt-out applies.
pub fn require() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND.get_or_init(find).clone()
}

fn find() -> Option<PathBuf> {
    let cxx = PathBuf::from(std::env::var_os(CLANGXX_ENV).unwrap_or_else(|| "clang++".into()));
    let works = Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("clang"));
    if works {
        return Some(cxx);
    }
    let opted_out = std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    let in_ci = std::env::var_os("CI").is_some();
    if opted_out && !in_ci {
        eprintln!(
            "\n!!!!! WARNING: {SKIP_ENV}=1 — the Metal kernels of kernels-msl were NOT compiled or \
             executed (no clang++ at {}). Nothing about them is verified by this run. !!!!!\n",
            cxx.display()
        );
        return None;
    }
    panic!(
        "\n\nclang++ is required to verify the Metal kernels of kernels-msl (they are compiled as \
         C++ and executed on an emulated grid; there is no other check of them without a Mac).\n\
         `{}` did not run as clang. Install clang (Debian/Ubuntu: `apt-get install clang`), or set \
         {CLANGXX_ENV} to a clang++ binary.{}\n",
        cxx.display(),
        if in_ci {
            String::new()
        } else {
            format!(" To skip these checks locally, explicitly set {SKIP_ENV}=1.")
        }
    );
}

/// Runs `cxx` with `args` in `dir`; panics with the compiler's output on failure.
pub fn compile(cxx: &Path, args: &[String], what: &str) {
    let out = Command::new(cxx)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cxx.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The sanitizer runtimes are only a Recommends of Debian's clang package.
    let hint = if stderr.contains("libclang_rt") {
        "\nclang's sanitizer runtimes are missing: install them (Debian/Ubuntu: \
         `apt-get install libclang-rt-dev`; `--no-install-recommends` skips them with clang)."
    } else {
        ""
    };
    assert!(
        out.status.success(),
        "{what}: clang++ failed ({})\n{}\n{stderr}{hint}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
}

/// Flags shared by every compilation of kernel code: the compatibility header first on the
/// include path, warnings as errors. `-Wno-unknown-attributes`: clang does not know Metal's
/// `[[buffer(i)]]` & co. (the signature parser checks them instead); `-Wno-unused-const-variable`:
/// the shared prelude declares constants not every kernel uses.
pub fn kernel_flags() -> Vec<String> {
    let compat = super::compat_dir();
    vec![
        "-I".into(),
        compat.display().to_string(),
        "-Wall".into(),
        "-Wextra".into(),
        "-Werror".into(),
        "-Wno-unknown-attributes".into(),
        "-Wno-unused-const-variable".into(),
    ]
}
