//! Running one test of the current test binary in a child process: for tests that change
//! process-wide state (the `log` logger) or need environment variables read once per process.

use std::process::Command;

/// Whether this process is the child that runs `name`'s body. In the parent (no `marker`
/// variable set) it re-runs test `name` of this binary in a child process with `marker` and
/// `envs` set, asserts that the child ran that one test and passed, and returns `false`: the
/// caller returns. The child gets `true` and runs the test's body.
pub fn in_child_process(name: &str, marker: &str, envs: &[(&str, &str)]) -> bool {
    if std::env::var_os(marker).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args(["--exact", name, "--nocapture"])
        .env(marker, "1")
        .envs(envs.iter().copied())
        .output()
        .expect("the test binary re-runs itself");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} in a child process:\n{text}");
    assert!(text.contains("1 passed"), "the child ran {name}:\n{text}");
    false
}
