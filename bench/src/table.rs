//! The terminal table of a run: one block per op family, one row per shape and M, then the
//! roofline, the decode-stack headline, issue 4's figures and the attention block.

use crate::fmt::{opt_num, opt_ratio, opt_sig, opt_time, text_table, time_ms};
use crate::report::{CaseResult, Report};
use crate::workload::OpKind;

#[path = "table_attention.rs"]
mod attention_block;

/// Renders the whole report as plain text (what the binary prints on stdout). Times of zero or
/// below read "not measured", as in RESULTS.md ([`Report::without_invalid_times`]).
pub fn render(report: &Report) -> String {
    let report = &report.clone().without_invalid_times();
    let mut out = String::new();
    let dev = report.device.as_ref();
    out.push_str(&format!(
        "bitnet-bench {} — {} — {}\n",
        report.version,
        dev.map_or("no GPU adapter".to_string(), |d| format!(
            "{} ({}, {})",
            d.name, d.backend, d.driver
        )),
        report.date_utc
    ));
    out.push_str(&format!(
        "CPU reference: {} ({} threads)\n",
        report.host.cpu_model, report.host.threads
    ));
    match (&report.roofline, &report.roofline_error) {
        (Some(r), _) => {
            out.push_str(&format!(
                "roofline: best copy {:.1} GB/s (read+write, {} per copy, {} [{}])\n",
                r.gbps(),
                crate::fmt::bytes(r.bytes),
                time_ms(r.time.median_ms),
                r.time.clock.tag()
            ));
            if let Some(f) = r.dispatch_floor {
                out.push_str(&format!("dispatch floor: {f}\n"));
            }
        }
        (None, Some(e)) => out.push_str(&format!("roofline: not measured ({e})\n")),
        (None, None) => out.push_str("roofline: not measured\n"),
    }
    for p in &report.copy_probes {
        out.push_str(&format!(
            "  copy probe: {:.1} GB/s — {}\n",
            p.gbps(),
            p.source
        ));
    }
    for p in &report.elementwise_probes {
        out.push_str(&format!(
            "  elementwise probe: {:.1} GB/s — {}\n",
            p.gbps(),
            p.source
        ));
    }
    out.push_str(&pool_line(report));
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    for op in [OpKind::Bitlinear, OpKind::WeightQuant, OpKind::ActQuant] {
        let cases: Vec<&CaseResult> = report.cases.iter().filter(|c| c.op == op).collect();
        if cases.is_empty() {
            continue;
        }
        out.push('\n');
        out.push_str(&format!("== {} ==\n", op.name()));
        out.push_str(&op_table(report, &cases));
    }
    if let Some(s) = &report.stack {
        out.push('\n');
        out.push_str(&format!(
            "== decode stack: {} layers × 7 linears = {} matrices, {} packed, M={} ==\n",
            s.spec.layers,
            s.matrices,
            crate::fmt::bytes(s.packed_weight_bytes),
            s.spec.m
        ));
        out.push_str(&stack_lines(report, s));
    }
    out.push_str(&issue4(report));
    out.push_str(&attention_block::attention(report));
    out.push('\n');
    out.push_str(&pool_line(report));
    out
}

/// The decode stack's three data flows (GPU span, one-submission wall time, GB/s and % of the
/// copy roofline), then the CPU reference, which runs the chained flow, and its ratio to the
/// GPU's chained flows: the same comparison as RESULTS.md.
fn stack_lines(report: &Report, s: &crate::report::StackResult) -> String {
    let mut out = String::new();
    let why = s.gpu_error.as_deref().unwrap_or("skipped");
    let chain = if s.gpu_chain_fused {
        "chained, one LinearChain dispatch"
    } else {
        "chained, LinearChain run linear by linear"
    };
    let flows = [
        ("independent", s.gpu, s.gpu_wall),
        ("chained", s.gpu_chained, s.gpu_chained_wall),
        (chain, s.gpu_chain, s.gpu_chain_wall),
    ];
    for (flow, span, wall) in flows {
        let Some(g) = span else {
            out.push_str(&format!("GPU {flow}: not measured ({why})\n"));
            continue;
        };
        let gbps = crate::report::gbps(s.bytes, g.median_ms);
        let roof = report.roofline.as_ref().map(|r| 100.0 * gbps / r.gbps());
        out.push_str(&format!(
            "GPU {flow}: {} [{}]  {} GB/s  {} % of copy  one submission, submit + wait wall time {}\n",
            time_ms(g.median_ms),
            g.clock.tag(),
            opt_sig(Some(gbps), "-"),
            opt_num(roof, 1, "-"),
            opt_time(wall.map(|w| w.median_ms), "-")
        ));
    }
    if let Some(m) = s.gpu_chain_back_to_back {
        out.push_str(&format!(
            "GPU {chain}, {} back to back in one submission: {} per run (wall ÷ runs)\n",
            crate::targets::runs(m.calls_per_sample),
            time_ms(m.median_ms)
        ));
    }
    let Some(c) = s.cpu else {
        let why = s.cpu_error.as_deref().unwrap_or("skipped");
        out.push_str(&format!("CPU (chained): not measured ({why})\n"));
        return out;
    };
    let speedup = |g: Option<crate::measure::Measurement>| {
        opt_ratio(g.map(|g| c.median_ms / g.median_ms), "-")
    };
    out.push_str(&format!(
        "CPU (chained): {}  GPU speed-up: chained {}, {chain} {}\n",
        time_ms(c.median_ms),
        speedup(s.gpu_chained),
        speedup(s.gpu_chain)
    ));
    out
}

/// Issue 4's streaming and batching figures (wall clock / GPU time as labelled).
fn issue4(report: &Report) -> String {
    let mut out = String::new();
    if let Some(s) = &report.stream {
        out.push_str(&format!(
            "\n== streaming (issue 4): {} f32 in {} chunks of {}x{} through act quant + BitLinear {}x{} ==\n",
            crate::fmt::bytes(s.input_bytes),
            s.chunks,
            s.chunk_rows,
            s.k,
            s.n,
            s.k
        ));
        let t = |m: Option<crate::measure::Measurement>| opt_time(m.map(|m| m.median_ms), "-");
        out.push_str(&format!(
            "total {} [wall]  upload only {} ({} GB/s host->GPU)  transfer only {}  compute only {}\n",
            t(s.total),
            t(s.upload_only),
            opt_sig(s.h2d_gbps(), "-"),
            t(s.transfer_only),
            t(s.compute_only)
        ));
        if let Some(h) = s.host {
            out.push_str(&format!(
                "caller thread of the last total run: {:.1} ms, writing staging {:.1} ms, waiting for a slot {:.1} ms, for results {:.1} ms\n",
                h.wall_ms, h.staging_ms, h.slot_wait_ms, h.result_wait_ms
            ));
        }
        out.push_str(&format!(
            "total / max(transfer, compute) = {} (target <= {})  via {}\n",
            opt_num(s.overlap_ratio(), 3, "-"),
            crate::stream::STREAM_GOAL,
            s.path
        ));
        if let Some(e) = &s.error {
            out.push_str(&format!("  error: {e}\n"));
        }
    }
    if let Some(b) = &report.batch {
        out.push_str(&format!(
            "\n== batched decode (issue 4): time(B=8) / time(B=1), target <= {} ==\n",
            crate::batch::BATCH_GOAL
        ));
        for s in &b.shapes {
            out.push_str(&format!(
                "{} {}x{}: B=1 {}  B=8 {}  ratio {}{}\n",
                s.label,
                s.n,
                s.k,
                opt_time(s.b1.map(|m| m.median_ms), "-"),
                opt_time(s.b8.map(|m| m.median_ms), "-"),
                opt_num(s.ratio(), 2, "-"),
                s.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  ({e})"))
            ));
        }
        out.push_str(&format!("via {}\n", b.path));
    }
    if let Some(o) = &report.overhead {
        out.push_str(&format!(
            "\n== engine overhead on the CPU path (issue 4): engine / cpu-ref, target <= {} ==\n",
            crate::overhead::OVERHEAD_GOAL
        ));
        for r in &o.rows {
            let kind = if r.host_facing { "" } else { "  (tensor op)" };
            out.push_str(&format!(
                "{:<14} {:<28} {}{kind}\n",
                r.engine,
                r.op,
                r.figure()
            ));
        }
    }
    out
}

/// `pool peak / live (goal ≤ 1.5): bitlinear …; quant …; decode stack …`.
fn pool_line(report: &Report) -> String {
    let parts: Vec<String> = crate::pool::sections(report)
        .iter()
        .map(|s| format!("{} {}", s.section, s.describe()))
        .collect();
    format!(
        "pool peak / live tensor bytes (goal ≤ {}): {}\n",
        crate::pool::POOL_RATIO_GOAL,
        parts.join("; ")
    )
}

fn op_table(report: &Report, cases: &[&CaseResult]) -> String {
    let throughput = if cases[0].op == OpKind::Bitlinear {
        "TOP/s"
    } else {
        "Gelem/s"
    };
    let mut rows = vec![vec![
        "case".to_string(),
        "GPU time".into(),
        "clock".into(),
        "GB/s".into(),
        throughput.into(),
        "% roofline".into(),
        "overlapped".into(),
        "% roof (ovl)".into(),
        "CPU time".into(),
        "CPU GB/s".into(),
        "GPU÷CPU time".into(),
    ]];
    for c in cases {
        let scale = if c.op == OpKind::Bitlinear { 1.0 } else { 1e3 };
        rows.push(vec![
            c.id.strip_prefix(c.op.name())
                .unwrap_or(&c.id)
                .trim()
                .to_string(),
            opt_time(c.gpu.map(|g| g.median_ms), missing(&c.gpu_error)),
            c.gpu.map_or("-".into(), |g| g.clock.tag().to_string()),
            opt_sig(c.gpu_gbps(), "-"),
            opt_sig(c.gpu_tops().map(|t| t * scale), "-"),
            if c.memory_bound {
                opt_num(c.roofline_pct(report.roofline.as_ref()), 1, "-")
            } else {
                "compute".into()
            },
            opt_time(c.gpu_overlapped.map(|g| g.median_ms), "-"),
            opt_num(c.overlapped_roofline_pct(report.roofline.as_ref()), 1, "-"),
            opt_time(c.cpu.map(|g| g.median_ms), missing(&c.cpu_error)),
            opt_sig(c.cpu_gbps(), "-"),
            opt_sig(c.gpu_over_cpu(), "-"),
        ]);
    }
    let mut out = text_table(&rows);
    // One line per distinct error, not per case: a missing op fails every shape the same way.
    let mut errors: Vec<(&str, &str, usize)> = Vec::new();
    for c in cases {
        for (side, e) in [("GPU", &c.gpu_error), ("CPU", &c.cpu_error)] {
            if let Some(e) = e.as_deref() {
                match errors.iter_mut().find(|(s, m, _)| *s == side && *m == e) {
                    Some(entry) => entry.2 += 1,
                    None => errors.push((side, e, 1)),
                }
            }
        }
    }
    for (side, e, count) in errors {
        out.push_str(&format!(
            "  {side} error ({count} of {} cases): {e}\n",
            cases.len()
        ));
    }
    out
}

/// The cell for a missing time: "skipped" (time limit), "error", or "-" (not asked for).
fn missing(error: &Option<String>) -> &'static str {
    match error.as_deref() {
        Some(e) if e.starts_with("skipped") => "skipped",
        Some(_) => "error",
        None => "-",
    }
}
