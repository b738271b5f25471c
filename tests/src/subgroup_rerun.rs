//! Re-running a test binary's subgroup-sensitive cases at lavapipe's smallest subgroup size, and
//! where its subgroup layout is broken.
//!
//! The kernels must be exact at every subgroup size a device may have (4 to 128 lanes), and a
//! kernel's 4-row blocks may be wider or narrower than a subgroup. CI's lavapipe runs 8-lane
//! subgroups; with `LP_NATIVE_VECTOR_WIDTH=128` (SSE's width, one of lavapipe's native ones) it
//! runs 4-lane subgroups, where blocks of 8 or more lanes span several subgroups and the kernels
//! gated on 8-lane subgroups give way. Wider emulation is not an oracle: at 1024 and 2048 bits
//! lavapipe reports 32 and 64 lanes but runs 16 (a probe's subgroupAdd(1) gave 16), and at 512
//! bits its `round` rounded exact ties away from zero inside the fused GEMV (an explicit
//! ties-to-even there made every case exact), failing the tie cases of cpu-ref's rounding.
//! That broken 1024-bit layout serves as a device whose subgroup layout fails the engine's
//! self-test: the cases must pass there on the workgroup-memory kernels.

use std::process::Command;

use crate::gpu_engine;

/// Set in a re-run child: which re-run it is (`Rerun::name`).
const CHILD_VAR: &str = "BITNET_TESTS_SUBGROUP_RERUN";
/// The subgroup size of the 4-lane re-run.
const LANES: u32 = 4;

/// A re-run on lavapipe at another native vector width.
#[derive(Clone, Copy)]
enum Rerun {
    /// 128 bits (SSE's width): 4-lane subgroups.
    FourLanes,
    /// 1024 bits: lavapipe reports 32-lane subgroups and runs 16, a layout the engine's subgroup
    /// self-test must reject (`engine/src/subgroup_probe.rs`), so the ops run their
    /// workgroup-memory kernels.
    BrokenLayout,
}

impl Rerun {
    fn name(self) -> &'static str {
        match self {
            Rerun::FourLanes => "4-lane subgroups",
            Rerun::BrokenLayout => "a broken subgroup layout",
        }
    }

    fn vector_bits(self) -> &'static str {
        match self {
            Rerun::FourLanes => "128",
            Rerun::BrokenLayout => "1024",
        }
    }

    /// In the child: panics unless the adapter really is in the state this re-run is for (so a
    /// lavapipe that ignored the variable fails loudly).
    fn check_child(self) {
        let info = gpu_engine().info();
        match self {
            Rerun::FourLanes => assert_eq!(
                (info.subgroup_min_size, info.subgroup_max_size),
                (LANES, LANES),
                "the re-run's adapter ({}) must run {LANES}-lane subgroups",
                info.adapter_name
            ),
            Rerun::BrokenLayout => assert!(
                !info
                    .features
                    .contains(bitnet_wgpu::wgpu::Features::SUBGROUP),
                "the engine kept subgroups on {} at 1024-bit vectors (reported {}..={} lanes), \
                 where lavapipe runs 16",
                info.adapter_name,
                info.subgroup_min_size,
                info.subgroup_max_size
            ),
        }
    }
}

/// Runs this test binary's cases matching `filters` (libtest substring filters) again in a
/// child process on 4-lane lavapipe subgroups, and fails with the child's output unless they
/// pass. `this_test` is the calling test's name: the child runs it too, where it checks that
/// the subgroups really have 4 lanes (so a lavapipe that ignored the variable fails loudly).
/// On other adapters it returns at once: there the other tests run at the device's own size.
pub fn rerun_on_4_lane_subgroups(this_test: &str, filters: &[&str]) {
    rerun(Rerun::FourLanes, this_test, filters);
}

/// Runs this test binary's cases matching `filters` again in a child process on a lavapipe
/// whose subgroup layout is broken (it reports 32 lanes and runs 16), and fails unless the
/// engine there dropped its subgroup kernels (checked by `this_test` in the child) and the
/// cases pass. On other adapters it returns at once.
pub fn rerun_where_the_subgroup_layout_is_broken(this_test: &str, filters: &[&str]) {
    rerun(Rerun::BrokenLayout, this_test, filters);
}

fn rerun(kind: Rerun, this_test: &str, filters: &[&str]) {
    if let Some(child) = std::env::var_os(CHILD_VAR) {
        if child.to_str() == Some(kind.name()) {
            kind.check_child();
        }
        return;
    }
    let info = gpu_engine().info();
    if !info.adapter_name.contains("llvmpipe") {
        eprintln!(
            "{this_test}: {} is not lavapipe; the other tests ran on its own subgroups",
            info.adapter_name
        );
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .arg(this_test)
        .args(filters)
        .env(CHILD_VAR, kind.name())
        .env("LP_NATIVE_VECTOR_WIDTH", kind.vector_bits())
        .output()
        .expect("the test binary re-runs itself");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let what = kind.name();
    assert!(
        out.status.success(),
        "{this_test}: cases {filters:?} failed on {what}:\n{text}"
    );
    // Every filter must have matched a case (a renamed test would otherwise drop out silently),
    // and so must the calling test, whose child run checks the adapter.
    for f in filters.iter().chain([&this_test]) {
        assert!(
            text.lines()
                .any(|l| l.starts_with("test ") && l.contains(f) && l.ends_with(" ok")),
            "{this_test}: no case matching {f:?} ran on {what}:\n{text}"
        );
    }
}
