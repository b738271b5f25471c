//! The binary's exit status and messages where no measurement can be made (no GPU needed: each
//! run here stops before the first one).

use std::process::Command;

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitnet-bench"));
    c.env("RUST_LOG", "off");
    c
}

/// A run of one small case on the CPU reference only (no GPU needed).
fn one_cpu_case() -> Command {
    let mut c = bench();
    c.args([
        "--no-gpu",
        "--no-progress",
        "--filter",
        "act_quant 2B q/o M=1 ",
    ]);
    c
}

/// A run of one small case on the GPU only.
fn one_gpu_case() -> Command {
    let mut c = bench();
    c.args([
        "--no-cpu",
        "--no-progress",
        "--filter",
        "act_quant 2B q/o M=1 ",
    ]);
    c
}

/// No adapter matching `WGPU_ADAPTER_NAME` (as on a machine without one): a clear error and a
/// non-zero exit, not a run that prints "no GPU" in every row and exits 0.
#[test]
fn no_adapter_is_an_error() {
    let out = one_gpu_case()
        .env("WGPU_ADAPTER_NAME", "no adapter has this name")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0; stderr: {stderr}");
    assert!(
        stderr.contains("GPU: not usable")
            && stderr.contains("WGPU_ADAPTER_NAME")
            && stderr.contains("--no-gpu"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// An output that cannot be written (here under a regular file) fails before anything is
/// measured, not after a full run whose JSON, SVG and RESULTS.md are then lost.
#[test]
fn unwritable_outputs_fail_before_measuring() {
    let dir = std::env::temp_dir().join(format!("bitnet-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let bad = file.join("out");
    for flag in ["--json", "--svg", "--results"] {
        let out = one_cpu_case().arg(flag).arg(&bad).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: exit 0");
        assert!(stderr.contains("a-file"), "{flag}: {stderr}");
        // Nothing measured, so no table.
        assert!(
            out.stdout.is_empty(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A peers file that does not parse is refused up front too.
    let peers = dir.join("peers.json");
    std::fs::write(&peers, "{").unwrap();
    let out = one_cpu_case()
        .arg("--results")
        .arg(dir.join("RESULTS.md"))
        .arg("--peers")
        .arg(&peers)
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(!dir.join("RESULTS.md").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that measures nothing (here every step comes after its --time-limit) writes its
/// outputs and then exits non-zero, saying so, rather than 0 with a table of "not measured".
#[test]
fn a_run_that_measures_nothing_is_an_error() {
    let out = one_cpu_case()
        .args(["--time-limit", "0.000001"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0; stderr: {stderr}");
    assert!(stderr.contains("no figure was measured"), "{stderr}");
}

/// BITNET_DISPATCH=cpu would send every op of the GPU benchmark to the CPU: refused, naming
/// the variable, instead of a run whose GPU figures are all errors.
#[test]
fn a_cpu_dispatch_override_is_refused() {
    let out = one_gpu_case()
        .env("BITNET_DISPATCH", "cpu")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0; stderr: {stderr}");
    assert!(stderr.contains("BITNET_DISPATCH=cpu"), "{stderr}");
}
