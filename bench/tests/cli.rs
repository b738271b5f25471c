//! The binary's exit status and messages where no measurement can be made (no GPU needed: each
//! run here stops before the first one).

use std::process::Command;

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitnet-bench"));
    c.env("RUST_LOG", "off");
    c
}

/// No adapter matching `WGPU_ADAPTER_NAME` (as on a machine without one): a clear error and a
/// non-zero exit, not a run that prints "no GPU" in every row and exits 0.
#[test]
fn no_adapter_is_an_error() {
    let out = bench()
        .env("WGPU_ADAPTER_NAME", "no adapter has this name")
        .args([
            "--no-cpu",
            "--no-progress",
            "--filter",
            "act_quant 2B q/o M=1 ",
        ])
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
