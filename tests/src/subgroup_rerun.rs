//! Re-running a test binary's subgroup-sensitive cases at lavapipe's smallest subgroup size.
//!
//! The kernels must be exact at every subgroup size a device may have (4 to 128 lanes), and a
//! kernel's 4-row blocks may be wider or narrower than a subgroup. CI's lavapipe runs 8-lane
//! subgroups; with `LP_NATIVE_VECTOR_WIDTH=128` (SSE's width, one of lavapipe's native ones) it
//! runs 4-lane subgroups, where blocks of 8 or more lanes span several subgroups and the kernels
//! gated on 8-lane subgroups give way. Wider emulation is not an oracle: at 1024 and 2048 bits
//! lavapipe reports 32 and 64 lanes but runs 16 (a probe's subgroupAdd(1) gave 16), and at 512
//! bits its `round` rounded exact ties away from zero inside the fused GEMV (an explicit
//! ties-to-even there made every case exact), failing the tie cases of cpu-ref's rounding.

use std::process::Command;

use crate::gpu_engine;

/// Set in a re-run child: the subgroup size it must find.
const CHILD_VAR: &str = "BITNET_TESTS_SUBGROUP_RERUN";
/// The subgroup size of the re-run, and lavapipe's vector width (bits) that gives it.
const LANES: u32 = 4;
const VECTOR_BITS: &str = "128";

/// Runs this test binary's cases matching `filters` (libtest substring filters) again in a
/// child process on 4-lane lavapipe subgroups, and fails with the child's output unless they
/// pass. `this_test` is the calling test's name: the child runs it too, where it checks that
/// the subgroups really have 4 lanes (so a lavapipe that ignored the variable fails loudly).
/// On other adapters it returns at once: there the other tests run at the device's own size.
pub fn rerun_on_4_lane_subgroups(this_test: &str, filters: &[&str]) {
    let info = gpu_engine().info();
    if std::env::var_os(CHILD_VAR).is_some() {
        assert_eq!(
            (info.subgroup_min_size, info.subgroup_max_size),
            (LANES, LANES),
            "the re-run's adapter ({}) must run {LANES}-lane subgroups",
            info.adapter_name
        );
        return;
    }
    if !info.adapter_name.contains("llvmpipe") {
        eprintln!(
            "{this_test}: {} is not lavapipe; the other tests ran at its own subgroup size",
            info.adapter_name
        );
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .arg(this_test)
        .args(filters)
        .env(CHILD_VAR, "1")
        .env("LP_NATIVE_VECTOR_WIDTH", VECTOR_BITS)
        .output()
        .expect("the test binary re-runs itself");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{this_test}: cases {filters:?} failed on {LANES}-lane subgroups:\n{text}"
    );
    // Every filter must have matched a case (a renamed test would otherwise drop out silently).
    for f in filters {
        assert!(
            text.lines()
                .any(|l| l.starts_with("test ") && l.contains(f) && l.ends_with(" ok")),
            "{this_test}: no case matching {f:?} ran on {LANES}-lane subgroups:\n{text}"
        );
    }
}
