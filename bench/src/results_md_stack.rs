//! The headline section of `bench/RESULTS.md`: one decode token through all linear layers, in
//! each data flow, against PyTorch's same stack.

use crate::fmt::{NOT_MEASURED as NM, bytes, opt_ratio, opt_sig, opt_time};
use crate::peers::{PeersReport, impls};
use crate::report::Report;

pub(super) fn stack(s: &mut String, ours: &Report, peers: Option<&PeersReport>) {
    s.push_str("\n## Headline: one decode token through all linear layers\n\n");
    let Some(st) = &ours.stack else {
        s.push_str("The decode stack was not measured in this run.\n");
        return;
    };
    s.push_str(&format!(
        "{} layers × 7 linears = {} distinct weight matrices, M = {}, one submission; {} packed ternary.\n\n",
        st.spec.layers,
        st.matrices,
        st.spec.m,
        bytes(st.packed_weight_bytes)
    ));
    // Two honest clocks: `ts` is the GPU span of the one-submission batch (first kernel start to
    // last kernel end, gaps between kernels included); the wall time adds the submit and the wait.
    s.push_str(&format!(
        "Three data flows, each one submission per token with every output kept until the step ends:\n\
         - **independent** (the issue's stack): every linear reads the layer input, so nothing orders \
         the {} kernels and the GPU may overlap them (PyTorch on one stream runs them one by one);\n\
         - **chained** (a real decode's dependencies): q, k and v read the layer input, o reads q's output \
         (standing in for attention), gate and up read o's, down reads gate's and feeds the next layer: \
         {} dependent steps, each behind a pipeline barrier;\n\
         - **chained, one LinearChain dispatch**: the same chained step as one `LinearChain` run, a single \
         dispatch whose workgroups wait for the workgroups producing their input (no barriers, one \
         dispatch to encode and submit).\n\n\
         GPU time is the timestamp span of the one-submission batch (first kernel start to last kernel end, \
         gaps included); wall time is submit + wait with the profiler off (adds encoding the recorded \
         commands, the submission and the wake-up). PyTorch's CUDA-graph time is event-timed over the \
         graph replay (launch included).\n\n",
        st.matrices,
        4 * st.spec.layers,
    ));
    for (flow, span, wall) in [
        ("independent", st.gpu, st.gpu_wall),
        ("chained", st.gpu_chained, st.gpu_chained_wall),
        (CHAIN_FLOW, st.gpu_chain, st.gpu_chain_wall),
    ] {
        let flow = match flow {
            CHAIN_FLOW if !st.gpu_chain_fused => {
                format!("{flow} (ran linear by linear: the chain kernel did not run here)")
            }
            f => f.to_string(),
        };
        stack_table(s, st, peers, &flow, span, wall);
    }
}

/// The chained flow run as one `LinearChain` dispatch (its own table of the headline).
const CHAIN_FLOW: &str = "chained, one LinearChain dispatch";

/// One data flow's table of the headline (`flow`: "independent" or "chained").
fn stack_table(
    s: &mut String,
    st: &crate::report::StackResult,
    peers: Option<&PeersReport>,
    flow: &str,
    span: Option<crate::measure::Measurement>,
    wall: Option<crate::measure::Measurement>,
) {
    let chained = flow != "independent";
    let ts = span.map(|g| g.median_ms);
    let wall = wall.map(|g| g.median_ms);
    s.push_str(&format!(
        "### {flow}: ours {} GPU span, {} wall{}\n\n",
        opt_time(ts, NM),
        opt_time(wall, NM),
        match (ts, wall) {
            // The span is taken with the profiler on, the wall time without it: a span above
            // the wall time means the profiled runs were the slower ones.
            (Some(t), Some(w)) if w < t => format!(
                " (wall ÷ span = {:.2}: the span, profiler on, exceeds the wall time, profiler \
                 off; the GPU time without the profiler is at most the wall time)",
                w / t
            ),
            (Some(t), Some(w)) => format!(" (wall ÷ span = {:.2})", w / t),
            _ => String::new(),
        }
    ));
    s.push_str("| implementation | time | weights streamed | GB/s (weights) | ours is faster by (GPU span) | ours is faster by (wall time) |\n|---|---|---|---|---|---|\n");
    let ours_ms = ts;
    // `versus`: whether the "faster by" column applies (not for our own GPU rows).
    let mut row = |name: String, ms: Option<f64>, wbytes: Option<u64>, versus: bool| {
        let gbps = ms.zip(wbytes).map(|(ms, b)| crate::report::gbps(b, ms));
        let speedup = ours_ms.zip(ms).filter(|_| versus).map(|(o, t)| t / o);
        let speedup_wall = wall.zip(ms).filter(|_| versus).map(|(o, t)| t / o);
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            opt_time(ms, NM),
            wbytes.map_or(NM.to_string(), bytes),
            opt_sig(gbps, "–"),
            opt_ratio(speedup, "–"),
            opt_ratio(speedup_wall, "–")
        ));
    };
    let clock = span.map_or(String::new(), |g| format!(" (clock {})", g.clock.tag()));
    row(
        format!("ours, GPU time, span of the one-submission batch{clock}"),
        ours_ms,
        Some(st.packed_weight_bytes),
        false,
    );
    row(
        "ours, GPU, one submission, submit + wait wall time".into(),
        wall,
        Some(st.packed_weight_bytes),
        false,
    );
    if let Some(m) = st
        .gpu_chain_back_to_back
        .filter(|_| flow.starts_with(CHAIN_FLOW))
    {
        row(
            format!(
                "ours, GPU, {} back to back in one submission, wall time ÷ runs",
                crate::targets::runs(m.calls_per_sample)
            ),
            Some(m.median_ms),
            Some(st.packed_weight_bytes),
            false,
        );
    }
    if chained {
        row(
            "ours, cpu-ref on the host CPU (chained)".into(),
            st.cpu.map(|c| c.median_ms),
            Some(st.packed_weight_bytes),
            true,
        );
    }
    for (imp, name) in [
        (impls::FP16_LINEAR, "PyTorch fp16 F.linear"),
        (impls::INT8_INT_MM, "PyTorch int8 _int_mm"),
    ] {
        for graph in [false, true] {
            let p = peers.and_then(|p| {
                if chained {
                    p.stack_chained(imp, graph, st.spec.layers, st.spec.m)
                } else {
                    p.stack(imp, graph, st.spec.layers, st.spec.m)
                }
            });
            if chained && p.is_none() {
                continue;
            }
            let pad = p
                .and_then(|p| p.padded_m)
                .map_or(String::new(), |m| format!(", M padded to {m}"));
            let how = if graph { "CUDA graph" } else { "eager" };
            row(
                format!("{name}, {how}{pad}"),
                p.and_then(|p| p.ms),
                p.and_then(|p| p.weight_bytes),
                true,
            );
        }
    }
    s.push('\n');
}
