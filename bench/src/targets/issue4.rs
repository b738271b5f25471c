//! Issue 4's targets: streaming overlap, host→GPU throughput, batched decode B = 8 vs B = 1, and
//! the engine's overhead on the CPU path.

use super::{Status, Target, sig};
use crate::report::Report;

/// Issue 4: streaming overlap and host→GPU throughput, batched decode B = 8 vs B = 1, the
/// engine's overhead on the CPU path.
pub(super) fn issue4_targets(ours: &Report) -> Vec<Target> {
    use crate::fmt::opt_time;
    let nm = crate::fmt::NOT_MEASURED;
    let st = ours.stream.as_ref();
    let ratio = st.and_then(|s| s.overlap_ratio());
    // The figures count only for a whole, clean stream: ≥ 1 GiB, every chunk on the GPU, no
    // error (a CPU chunk or a failure is "not met"; a short stream cannot be judged at all).
    let full = st.map(|s| s.input_bytes >= 1 << 30);
    let clean = st.map(|s| s.cpu_chunks == 0 && s.error.is_none());
    let stream_evidence = st.map_or("not measured (filtered out)".to_string(), |s| {
        format!(
            "{} in {} chunks of {}×{} f32 → {}×{}: total {}, transfer only {}, compute only {} → {}{}{}{}{}",
            crate::fmt::bytes(s.input_bytes),
            s.chunks,
            s.chunk_rows,
            s.k,
            s.n,
            s.k,
            opt_time(s.total.map(|m| m.median_ms), nm),
            opt_time(s.transfer_only.map(|m| m.median_ms), nm),
            opt_time(s.compute_only.map(|m| m.median_ms), nm),
            crate::fmt::opt_ratio(ratio, "no ratio"),
            match (s.input_bytes < 1 << 30, s.cpu_chunks) {
                (true, _) => " (less than 1 GiB streamed)".to_string(),
                (false, 0) => String::new(),
                (false, n) => format!(" ({n} chunks ran on the CPU)"),
            },
            s.host.map_or(String::new(), |h| format!(
                "; the caller's thread in the last total run: staging writes {:.1} ms, slot waits {:.1} ms, result waits {:.1} ms of {:.1} ms",
                h.staging_ms, h.slot_wait_ms, h.result_wait_ms, h.wall_ms
            )),
            s.error.as_ref().map_or(String::new(), |e| format!("; error: {e}")),
            if s.path.is_empty() { String::new() } else { format!(" (via {})", s.path) }
        )
    });
    let h2d = st.and_then(|s| s.h2d_gbps());
    let batch = ours.batch.as_ref();
    let items: Vec<Option<f64>> =
        batch.map_or(vec![], |b| b.shapes.iter().map(|s| s.ratio()).collect());
    let batch_evidence = batch.map_or("not measured (filtered out)".to_string(), |b| {
        let per: Vec<String> = b
            .shapes
            .iter()
            .map(|s| {
                format!(
                    "{} {}×{}: {}{}",
                    s.label,
                    s.n,
                    s.k,
                    s.ratio().map_or(nm.to_string(), |r| format!("{r:.2}")),
                    plans_note(s)
                )
            })
            .collect();
        let servers: Vec<String> = b
            .shapes
            .iter()
            .filter_map(|s| Some(format!("{} {:.2}", s.label, s.server_ratio()?)))
            .collect();
        let server = if servers.is_empty() {
            String::new()
        } else {
            format!(
                "; end to end (wall, 8 concurrent callers through BatchingLinear / 1 through Linear::forward, GPU forced): {}",
                servers.join(", ")
            )
        };
        format!("{} (via {}){server}", per.join("; "), b.path)
    });
    vec![
        Target {
            goal: "issue 4: streaming ≥ 1 GiB of activations (act quant + BitLinear, chunks) — total ≤ 1.1 × max(transfer, compute)",
            evidence: stream_evidence,
            status: Status::of(&[
                ratio.map(|r| r <= crate::stream::STREAM_GOAL),
                full.filter(|f| *f),
                clean,
            ]),
        },
        Target {
            goal: "issue 4: host→GPU throughput while streaming (aim ≥ 25 GB/s; plain write_buffer: 3.3 GB/s on the H100)",
            evidence: st.map_or(nm.to_string(), |s| {
                format!(
                    "{} GB/s ({} uploaded, uploads only, {}{})",
                    crate::fmt::opt_sig(h2d, nm),
                    crate::fmt::bytes(s.input_bytes),
                    opt_time(s.upload_only.map(|m| m.median_ms), nm),
                    s.staging_gbps.map_or(String::new(), |g| format!(
                        "; host writes into the staging ring {} GB/s",
                        sig(g)
                    ))
                )
            }),
            status: Status::of(&[h2d.map(|g| g >= 25.0), full.filter(|f| *f), clean]),
        },
        Target {
            goal: "issue 4: batched decode time(B = 8) / time(B = 1) ≤ 1.5 on the 2B4T decode shapes",
            evidence: batch_evidence,
            status: Status::of(
                &items
                    .iter()
                    .map(|v| v.map(|v| v <= crate::batch::BATCH_GOAL))
                    .collect::<Vec<_>>(),
            ),
        },
    ]
    .into_iter()
    .chain(overhead_targets(ours))
    .collect()
}

/// Issue 4: small tensors that stay on the CPU cost at most 5 % more through the engine than
/// through cpu-ref: two targets, the host-facing BitNet ops (cpu-ref's functions on slices) and
/// the tensor ops (engine tensors against cpu-ref's tensors).
fn overhead_targets(ours: &Report) -> [Target; 2] {
    let o = ours.overhead.as_ref();
    let evidence = |host_facing: bool, path: &str| {
        o.map_or(
            "not measured (filtered out, or --no-cpu)".to_string(),
            |o| {
                let rows: Vec<&crate::overhead::OverheadRow> = o
                    .rows
                    .iter()
                    .filter(|r| r.host_facing == host_facing)
                    .collect();
                let mut engines: Vec<&str> = rows.iter().map(|r| r.engine.as_str()).collect();
                engines.dedup();
                let per: Vec<String> = engines
                    .iter()
                    .map(|e| {
                        let figures: Vec<String> = rows
                            .iter()
                            .filter(|r| r.engine == *e)
                            .map(|r| format!("{} {}", r.op, r.figure()))
                            .collect();
                        format!("{e}: {}", figures.join(", "))
                    })
                    .collect();
                format!(
                    "engine time / cpu-ref time, interleaved batches, median of rounds, median of {} passes — {} (via {path})",
                    crate::overhead::PASSES,
                    per.join("; "),
                )
            },
        )
    };
    [
        Target {
            goal: "issue 4: small tensors that stay on the CPU cost ≤ 5 % more than calling cpu-ref directly (aim ≤ 1 %): host-facing BitNet ops",
            evidence: evidence(true, crate::overhead::PATH),
            status: Status::of(&[o.and_then(|o| o.met(true))]),
        },
        Target {
            goal: "issue 4: the same for the CPU engine's tensor ops (engine tensors against cpu-ref's tensors)",
            evidence: evidence(false, crate::overhead::TENSOR_PATH),
            status: Status::of(&[o.and_then(|o| o.met(false))]),
        },
    ]
}

/// `" (B = 1: plan, B = 8: plan)"` when the report names the plans, else nothing.
fn plans_note(s: &crate::batch::BatchShape) -> String {
    match (&s.plan_b1, &s.plan_b8) {
        (Some(a), Some(b)) => format!(" (B = 1: {a}, B = 8: {b})"),
        _ => String::new(),
    }
}
