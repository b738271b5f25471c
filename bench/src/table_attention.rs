//! The terminal table's attention block: per case our GPU time, GB/s and % of the copy
//! roofline (decode), TFLOP/s, cpu-ref and the KV append, as RESULTS.md shows them.

use crate::fmt::{opt_num, opt_sig, opt_time, text_table};
use crate::report::Report;

/// The attention block, or nothing when the run has no attention section.
pub(super) fn attention(report: &Report) -> String {
    let Some(a) = &report.attention else {
        return String::new();
    };
    let mut rows = vec![vec![
        "case".to_string(),
        "GPU time".into(),
        "clock".into(),
        "GB/s".into(),
        "% roofline".into(),
        "TFLOP/s".into(),
        "CPU time".into(),
        "KV append".into(),
    ]];
    for c in &a.cases {
        let missing = |e: &Option<String>| super::missing(e);
        rows.push(vec![
            c.id.trim_start_matches("attention ").to_string(),
            opt_time(c.gpu.map(|g| g.median_ms), missing(&c.gpu_error)),
            c.gpu.map_or("-".into(), |g| g.clock.tag().to_string()),
            opt_sig(c.gpu_gbps(), "-"),
            if c.is_decode() {
                opt_num(c.roofline_pct(report.roofline.as_ref()), 1, "-")
            } else {
                "compute".into()
            },
            opt_sig(c.gpu_tflops(), "-"),
            opt_time(c.cpu.map(|g| g.median_ms), missing(&c.cpu_error)),
            opt_time(c.append.map(|g| g.median_ms), missing(&c.append_error)),
        ]);
    }
    let mut out = format!(
        "\n== attention (causal, scale 1/sqrt(D); decode: Tq = 1) and KV append of one position ==\n{}",
        text_table(&rows)
    );
    for c in &a.cases {
        for (side, e) in [
            ("GPU", &c.gpu_error),
            ("KV append", &c.append_error),
            ("CPU", &c.cpu_error),
        ] {
            if let Some(e) = e {
                out.push_str(&format!("  {side} error ({}): {e}\n", c.id));
            }
        }
    }
    out.push_str(&format!("via {}\nappend via {}\n", a.path, a.append_path));
    out
}
