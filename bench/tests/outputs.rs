//! The outputs of a run from synthetic figures: RESULTS.md ratios and verdicts, "not measured"
//! for everything absent, JSON round trip, and a well-formed SVG. No GPU needed.

mod common;

use bitnet_bench::measure::Clock;
use bitnet_bench::peers::PeersReport;
use bitnet_bench::report::{CaseResult, Report};
use bitnet_bench::workload::{OpKind, Workload};
use bitnet_bench::{results_md, svg, table};
use common::{line, ms, ours, peers};

#[test]
fn results_md_ratios_and_verdicts() {
    let md = results_md::render(&ours(), Some(&peers()), "bitnet-bench merge");
    // Decode stack: independent 2.4 / 0.4 = 6×, chained 2.7 / 0.6 = 4.5× → not met.
    let stack_line = line(&md, "| decode layer stack");
    assert!(
        stack_line.contains("6.00×")
            && stack_line.contains("4.50×")
            && stack_line.contains("**not met**"),
        "{stack_line}"
    );
    // The chained floor: 18 µs per layer × 30 layers = 540 µs; PyTorch's 2.7 ms / 0.54 = 5×.
    assert!(
        stack_line.contains("floor of plain reads behind barriers 540.0 µs → at most 5.00×"),
        "{stack_line}"
    );
    // GEMV: one large shape measured (overlapped 44.6 %, below 80 % although serial 89.2 % is
    // above: the overlapped figure decides), the other missing → not met.
    let gemv = line(&md, "| GEMV");
    assert!(
        gemv.contains("2560×6912: not measured") && gemv.contains("**not met**"),
        "{gemv}"
    );
    assert!(gemv.contains("6912×2560 (serial 89.2 %): 44.6 %"), "{gemv}");
    // Prefill: 1.0 / 0.2 = 5× > 4 → not met.
    let prefill = line(&md, "| prefill");
    assert!(
        prefill.contains("5.00×") && prefill.contains("**not met**"),
        "{prefill}"
    );
    // Quant speed-up over cpu-ref: 10 / 0.2 = 50×.
    assert!(md.contains("weight 6912×2560: 50.0×"), "{md}");
    assert!(
        md.contains("| elementwise probe | 1500.0 GB/s (150 % of the roofline) — engine add |"),
        "{md}"
    );
    // Absent peer figures are "not measured", never a number; the error reason is listed once.
    assert!(md.contains("PyTorch int8 _int_mm, CUDA graph | not measured"));
    assert!(md.contains("not measured (1×) — GPU: kernel / failed"));
    // Headline: both data flows, both clocks (independent: ts 0.4 ms, wall 0.5 ms; chained:
    // ts 0.6 ms, wall 0.7 ms).
    assert!(
        md.contains("### independent: ours 400.0 µs GPU span, 500.0 µs wall (wall ÷ span = 1.25)"),
        "{md}"
    );
    assert!(
        md.contains("### chained: ours 600.0 µs GPU span, 700.0 µs wall (wall ÷ span = 1.17)"),
        "{md}"
    );
    assert!(
        md.contains("ours, cpu-ref on the host CPU (chained)"),
        "{md}"
    );
    // The chained step as one LinearChain dispatch: its own table, and its own target clause
    // (2.7 / 0.55 = 4.91×: still not met).
    assert!(
        md.contains("### chained, one LinearChain dispatch: ours 550.0 µs GPU span, 580.0 µs wall"),
        "{md}"
    );
    assert!(
        md.contains("chained as one LinearChain dispatch: ours 550.0 µs"),
        "{md}"
    );
    // Its runs back to back (wall ÷ runs): 2.7 / 0.56 = 4.82×, in the clause and in the table.
    assert!(
        stack_line.contains(
            "16 runs back to back in one submission: 560.0 µs per run (wall ÷ runs) → 4.82×"
        ),
        "{stack_line}"
    );
    assert!(
        md.contains(
            "| ours, GPU, 16 runs back to back in one submission, wall time ÷ runs | 560.0 µs |"
        ),
        "{md}"
    );
    // Pool: bitlinear 1.1 (2 cases), quant 1.6 → not met; the stack's 600 / 500 = 1.2.
    let pool = line(&md, "| pool peak / live ≤ 1.5");
    assert!(
        pool.contains("bitlinear: 1.100 (worst of 2 cases")
            && pool.contains("quant: 1.600 (worst of 1 case: weight_quant")
            && pool.contains("decode stack: 1.200")
            && pool.contains("**not met**"),
        "{pool}"
    );
    let header = line(&md, "| pool peak / live tensor bytes");
    assert!(
        header.contains("bitlinear: 1.100") && header.contains("decode stack: 1.200"),
        "{header}"
    );
}

/// The chained clause takes the faster of its ways, the chain's back-to-back runs included:
/// 2.7 / 0.5 = 5.4× meets it, and with the independent 6× the stack target is met.
#[test]
fn chain_runs_back_to_back_can_meet_the_stack_target() {
    let mut r = ours();
    r.stack.as_mut().unwrap().gpu_chain_back_to_back = Some(ms(0.5, Clock::Wall));
    let md = results_md::render(&r, Some(&peers()), "merge");
    let stack = line(&md, "| decode layer stack");
    assert!(
        stack.contains("per run (wall ÷ runs) → 5.40×") && stack.ends_with("| **met** |"),
        "{stack}"
    );
}

/// A stack shorter than the 30-layer model (`--quick`, `--layers`), with peers of the same
/// length, is reported but never judged: the target names the 210-matrix decode stack. The
/// headline's text counts its own matrices and dependent steps.
#[test]
fn a_short_stack_is_reported_never_judged() {
    use bitnet_bench::peers::PeerStack;
    use bitnet_bench::workload::StackSpec;
    let mut r = ours();
    r.stack.as_mut().unwrap().gpu_chain_back_to_back = Some(ms(0.5, Clock::Wall));
    let spec = StackSpec { layers: 4, m: 1 };
    let st = r.stack.as_mut().unwrap();
    (st.spec, st.matrices) = (spec, 28);
    let mut p = peers();
    p.stacks
        .iter_mut()
        .for_each(|s: &mut PeerStack| s.layers = 4);
    let md = results_md::render(&r, Some(&p), "merge");
    let stack = line(&md, "| decode layer stack");
    assert!(
        stack.contains("4 layers, M = 1 (not the 30-layer decode stack")
            && stack.ends_with("| incomplete |"),
        "{stack}"
    );
    assert!(md.contains("nothing orders the 28 kernels") && md.contains("16 dependent steps"));
}

#[test]
fn results_md_without_peers_invents_nothing() {
    let md = results_md::render(&ours(), None, "merge");
    let stack_line = line(&md, "| decode layer stack");
    assert!(stack_line.contains("not measured") && !stack_line.contains("**met**"));
    assert!(md.contains("| PyTorch device | not measured"));
}

#[test]
fn results_md_names_each_batch_sides_plan() {
    use bitnet_bench::batch::{BatchResult, BatchShape};
    let mut r = ours();
    let shape = |label: &str, b1: f64, b8: f64| BatchShape {
        label: label.into(),
        n: 2560,
        k: 2560,
        b1: Some(ms(b1, Clock::Timestamp)),
        b8: Some(ms(b8, Clock::Timestamp)),
        plan_b1: Some("fused gemv (TPR 32)".into()),
        plan_b8: Some("fused gemv (TPR 16)".into()),
        server_b1: None,
        server_b8: None,
        error: None,
    };
    r.batch = Some(BatchResult {
        path: "Engine::bitlinear_batched_tensor".into(),
        shapes: vec![
            shape("2B q/o", 0.004, 0.0064),
            shape("2B k/v", 0.004, 0.005),
        ],
    });
    let md = results_md::render(&r, None, "merge");
    let batch = line(&md, "| issue 4: batched decode");
    assert!(
        batch.contains(
            "2B q/o 2560×2560: 1.60 (B = 1: fused gemv (TPR 32), B = 8: fused gemv (TPR 16))"
        ),
        "{batch}"
    );
    assert!(batch.contains("**not met**"), "{batch}");
}

#[test]
fn results_md_judges_the_engine_overhead_on_the_cpu_path() {
    use bitnet_bench::overhead::{OverheadResult, OverheadRow};
    let mut r = ours();
    let judged = |r: &Report| {
        let md = results_md::render(r, None, "merge");
        line(&md, "| issue 4: small tensors").to_string()
    };
    assert!(judged(&r).contains("not measured"));
    let row = |engine: &str, op: &str, ratio: f64, gpu_runs: u64| OverheadRow {
        engine: engine.into(),
        op: op.into(),
        ratio,
        passes: [ratio - 0.01, ratio + 0.02],
        gpu_runs,
        per_call_ns: None,
        host_facing: true,
    };
    r.overhead = Some(OverheadResult {
        rows: vec![
            row("Engine::cpu()", "bitlinear_1x256x256", 1.004, 0),
            row("Engine::new()", "bitlinear_1x256x256", 1.05, 0),
        ],
    });
    let met = judged(&r);
    assert!(
        met.contains(
            "Engine::cpu(): bitlinear_1x256x256 1.004 (passes 0.994-1.024); Engine::new(): \
             bitlinear_1x256x256 1.050 (passes 1.040-1.070)"
        ),
        "{met}"
    );
    assert!(met.contains("**met**"), "{met}");
    r.overhead.as_mut().unwrap().rows[1] = row("Engine::new()", "bitlinear_1x256x256", 1.051, 3);
    let over = judged(&r);
    assert!(
        over.contains("1.051 (passes 1.041-1.071) (ran on the GPU)")
            && over.contains("**not met**"),
        "{over}"
    );
    // Tensor-op rows are their own target: one past the goal fails it, not the host-facing one.
    let tensors = |r: &Report| {
        let md = results_md::render(r, None, "merge");
        line(&md, "| issue 4: the same for the CPU engine's tensor ops").to_string()
    };
    assert!(tensors(&r).contains("not measured"));
    let o = r.overhead.as_mut().unwrap();
    o.rows[1] = row("Engine::new()", "bitlinear_1x256x256", 1.02, 0);
    o.rows.push(OverheadRow {
        host_facing: false,
        ..row("Engine::cpu()", "relu_tensor_256", 1.7, 0)
    });
    let (host, tensor) = (judged(&r), tensors(&r));
    assert!(
        host.contains("**met**") && !host.contains("relu_tensor"),
        "{host}"
    );
    assert!(
        tensor.contains(
            "Engine::cpu(): relu_tensor_256 1.700 (passes 1.690-1.720) (via Engine::cpu()'s unary"
        ) && tensor.contains("**not met**")
            && !tensor.contains("bitlinear_1x256x256"),
        "{tensor}"
    );
    r.overhead.as_mut().unwrap().rows[2].ratio = 1.04;
    assert!(tensors(&r).contains("**met**"));
    // Each side's time per call, where the report has it, stands beside the ratio.
    r.overhead.as_mut().unwrap().rows[2].per_call_ns = Some([36.6, 38.1]);
    assert!(
        tensors(&r).contains("1.040 (passes 1.690-1.720; cpu-ref 37 ns, engine 38 ns)"),
        "{}",
        tensors(&r)
    );
    // Rows of reports from before the tensor rows are host-facing.
    let mut json: serde_json::Value = serde_json::to_value(&r).unwrap();
    let rows = json["overhead"]["rows"].as_array_mut().unwrap();
    rows.iter_mut()
        .for_each(|row| drop(row.as_object_mut().unwrap().remove("host_facing")));
    let old: Report = serde_json::from_value(json.clone()).unwrap();
    assert!(old.overhead.unwrap().rows.iter().all(|row| row.host_facing));
    // Reports from before the section existed read as not measured.
    json.as_object_mut().unwrap().remove("overhead");
    assert!(judged(&serde_json::from_value::<Report>(json).unwrap()).contains("not measured"));
}

#[test]
fn results_md_says_how_the_clocks_were_kept() {
    let mut r = ours();
    assert!(!results_md::render(&r, None, "merge").contains("- GPU clocks:"));
    r.clock_keeper = true;
    let md = results_md::render(&r, None, "merge");
    assert!(line(&md, "- GPU clocks:").contains("clock_keeper.rs"));
    // Reports from before the keeper existed read as kept off.
    let mut json: serde_json::Value = serde_json::to_value(&r).unwrap();
    json.as_object_mut().unwrap().remove("clock_keeper");
    assert!(!serde_json::from_value::<Report>(json).unwrap().clock_keeper);
}

#[test]
fn json_round_trip_and_svg() {
    let r = ours();
    let text = serde_json::to_string(&r).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    let s = svg::render(&r);
    assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
    assert!(s.contains("GPU &lt;&amp;&gt;") && !s.contains("GPU <&>"));
    assert!(s.contains("not measured"));
    let t = table::render(&r);
    assert!(
        t.contains("pool peak / live tensor bytes (goal ≤ 1.5): bitlinear 1.100"),
        "{t}"
    );
    assert!(
        t.contains("== bitlinear ==") && t.contains("GPU error (1 of 3 cases): kernel | failed")
    );
}

/// A run that measured only some of a target's cases can never print "met": the GEMV target
/// with just one large shape, passing, is incomplete.
#[test]
fn partial_runs_are_incomplete_never_met() {
    let mut r = ours();
    r.cases
        .retain(|c| c.op == OpKind::Bitlinear && c.m == 1 && c.n == 6912);
    r.cases[0].gpu_overlapped = Some(ms(0.001, Clock::Timestamp)); // far above 80 %
    let md = results_md::render(&r, Some(&peers()), "bitnet-bench merge");
    let gemv = line(&md, "| GEMV (M = 1)");
    assert!(gemv.contains("| incomplete |"), "{gemv}");
}

/// Peer times of zero or below measure nothing: "not measured", no ratio, no verdict (a
/// negative fp16 time read as "within 4×", a zero one as "0×").
#[test]
fn invalid_peer_times_are_not_measured() {
    let text = r#"{"schema":"bitnet-bench-peers/1","cases":[
        {"impl":"torch_fp16_linear","m":512,"n":2560,"k":2560,"ms":-0.5},
        {"impl":"torch_fp16_linear","m":1,"n":6912,"k":2560,"ms":0.0}],
      "stacks":[{"impl":"torch_fp16_linear","cuda_graph":true,"layers":30,"m":1,"ms":0.0},
        {"impl":"torch_fp16_linear","cuda_graph":true,"chained":true,"layers":30,"m":1,"ms":-1}]}"#;
    let p = PeersReport::from_json(text).unwrap();
    let md = results_md::render(&ours(), Some(&p), "merge");
    let line = |start: &str| line(&md, start);
    let prefill = line("| prefill");
    assert!(
        prefill.contains("2560×2560: not measured |") && prefill.ends_with("| not measured |"),
        "{prefill}"
    );
    let stack = line("| decode layer stack");
    assert!(
        stack.contains("PyTorch fp16 graph not measured → no ratio")
            && stack.ends_with("| not measured |"),
        "{stack}"
    );
    let row = line("| t 6912×2560 | 1 |");
    assert!(
        row.contains("| not measured | not measured | – | – |"),
        "{row}"
    );
}

/// Our own times of zero or below measure nothing either: a zero GEMV time read as infinite
/// bandwidth ("met"), a zero stack span as an infinite speed-up.
#[test]
fn invalid_times_of_ours_are_not_measured() {
    let mut r = ours();
    r.cases = [(6912, 2560), (2560, 6912), (14336, 4096), (4096, 14336)]
        .map(|(n, k)| {
            let w = Workload {
                op: OpKind::Bitlinear,
                shape: "t",
                m: 1,
                n,
                k,
            };
            let mut c = CaseResult::new(&w);
            c.gpu = Some(ms(0.0, Clock::Timestamp));
            c.gpu_overlapped = Some(ms(0.0, Clock::Timestamp));
            c
        })
        .to_vec();
    let s = r.stack.as_mut().unwrap();
    (s.gpu, s.gpu_chained) = (
        Some(ms(0.0, Clock::Timestamp)),
        Some(ms(-1.0, Clock::Timestamp)),
    );
    let md = results_md::render(&r, Some(&peers()), "merge");
    let line = |start: &str| line(&md, start);
    let gemv = line("| GEMV (M = 1)");
    assert!(
        gemv.contains("6912×2560: not measured;") && gemv.ends_with("| not measured |"),
        "{gemv}"
    );
    let stack = line("| decode layer stack");
    assert!(
        stack.contains("independent: ours not measured vs"),
        "{stack}"
    );
    assert!(!stack.contains("**met**"), "{stack}");
}

/// The SVG and the table read zero times as "not measured", as RESULTS.md does: a zero case
/// time made an infinite percent, and the SVG's grid loop (every 20 % up to the largest bar)
/// never ended; a zero roofline time printed "inf GB/s".
#[test]
fn zero_times_in_svg_and_table_are_not_measured() {
    let mut r = ours();
    r.cases[0].gpu_overlapped = Some(ms(0.0, Clock::Timestamp));
    let s = svg::render(&r);
    assert!(s.trim_end().ends_with("</svg>") && !s.contains("inf") && !s.contains("NaN"));
    r.roofline.as_mut().unwrap().time = ms(0.0, Clock::Timestamp);
    let t = table::render(&r);
    assert!(
        !t.contains("inf GB/s") && t.contains("roofline: not measured"),
        "{t}"
    );
    assert!(!svg::render(&r).contains("inf GB/s"));
}

/// The table's decode stack shows all three data flows, and the CPU speed-up compares the CPU's
/// chained flow with the GPU's chained flows, as RESULTS.md does: it printed the independent
/// flow alone and divided the chained CPU time by it (6 / 0.4 = 15× here).
#[test]
fn table_stack_shows_every_flow_and_compares_like_with_like() {
    let mut r = ours();
    r.stack.as_mut().unwrap().cpu = Some(ms(6.0, Clock::Cpu));
    let t = table::render(&r);
    let line = |start: &str| line(&t, start);
    assert!(line("GPU independent").contains("400.0 µs [ts]"), "{t}");
    assert!(line("GPU chained:").contains("600.0 µs [ts]"), "{t}");
    assert!(
        line("GPU chained, one LinearChain").contains("550.0 µs [ts]"),
        "{t}"
    );
    assert!(
        t.contains(
            "GPU chained, one LinearChain dispatch, 16 runs back to back in one submission: \
             560.0 µs per run (wall ÷ runs)"
        ),
        "{t}"
    );
    let cpu = line("CPU (chained)");
    assert!(
        cpu.contains("6.000 ms") && cpu.contains("10.0×") && cpu.contains("10.9×"),
        "{cpu}"
    );
    assert!(!t.contains("15.0×"), "{t}");
}
