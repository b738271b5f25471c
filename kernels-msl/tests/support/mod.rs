//! Shared by the kernels-msl integration tests (`compile.rs`, `emulated.rs`, `fast_math.rs`):
//! clang discovery, the kernel-signature parser, the emulation harness, the kernels' launch
//! chains, deterministic test data and deliberately broken test-only kernels.
#![allow(dead_code)] // each test binary uses a different subset

pub mod clang;
pub mod data;
pub mod generate;
pub mod harness;
pub mod kernels;
pub mod probe;
pub mod signature;

use std::path::PathBuf;

/// `kernels-msl/tests`.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// `kernels-msl/shaders`.
pub fn shaders_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

/// The directory holding the Metal compatibility header (`metal_stdlib`).
pub fn compat_dir() -> PathBuf {
    tests_dir().join("metal_compat")
}

/// Scratch space for builds and runs, under the target directory (never the source tree).
pub fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("msl-emu");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
