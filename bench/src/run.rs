//! One measuring run: pick the workloads, time GPU and CPU, assemble the [`Report`], write the
//! requested outputs. A failing case is recorded and the run goes on.

use crate::cli::RunArgs;
use crate::clock_keeper;
use crate::error::{BenchError, Result, read_file, write_file};
use crate::gpu::{ElementwiseProbe, GpuBench};
use crate::gpu_stack::StackTimes;
use crate::measure::RepeatPolicy;
use crate::peers::PeersReport;
use crate::pool::{self, PoolPeak};
use crate::progress::Progress;
use crate::report::{CaseResult, Report, SCHEMA, StackResult};
use crate::selection::{Selection, select};
use crate::steps::{Steps, guarded, one_line};
use crate::workload::OpKind;
use crate::{cpu, date, results_md, roofline, svg, table};
use std::time::{Duration, Instant};

#[path = "run_sections.rs"]
mod sections;

/// Id `--filter` matches against for the decode stack.
pub const STACK_ID: &str = "stack decode 2B4T";

/// Bytes per copy-kernel buffer (two of them): 512 MiB on a real GPU, less in `--quick`.
fn roofline_bytes(quick: bool) -> u64 {
    if quick { 64 << 20 } else { 512 << 20 }
}

/// Runs the benchmark as `args` says; `command` is the exact command line, for the record.
///
/// Order: roofline, the decode stack (the headline, so a time limit never cuts it), issue 4's
/// streaming and batching, the attention section, then every case. Each step is guarded: an
/// error or a panic in one step is recorded and the run goes on; after `--time-limit` the
/// remaining steps are recorded as skipped; with `--json` the report is rewritten after every
/// step, so a run killed from outside still leaves its figures behind.
pub fn run(args: &RunArgs, command: &str) -> Result<Report> {
    let Selection {
        cases,
        stack_spec,
        do_stream,
        do_batch,
        do_overhead,
        attention,
    } = select(args)?;
    let sides = usize::from(args.gpu) + usize::from(args.cpu);
    let steps = usize::from(args.gpu)
        + usize::from(do_stream)
        + usize::from(do_batch)
        + usize::from(do_overhead)
        + sides * (cases.len() + usize::from(stack_spec.is_some()))
        + usize::from(args.gpu) * cases.iter().filter(|w| w.memory_bound()).count()
        + sections::attention_steps(&attention, args.gpu, args.cpu);
    let mut st = Steps {
        progress: Progress::new(steps, args.progress),
        deadline: args
            .time_limit_s
            .map(|s| Instant::now() + Duration::from_secs_f64(s)),
        json: args.json.clone(),
    };

    let mut report = Report {
        schema: SCHEMA.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        date_utc: date::now_utc(),
        command: command.into(),
        quick: args.quick,
        device: None,
        host: cpu::host(),
        roofline: None,
        copy_probes: Vec::new(),
        elementwise_probes: Vec::new(),
        roofline_error: None,
        cases: cases.iter().map(CaseResult::new).collect(),
        stack: None,
        stream: None,
        batch: None,
        overhead: None,
        attention: None,
        pool: Vec::new(),
        clock_keeper: false,
        notes: Vec::new(),
    };
    let gpu_policy = RepeatPolicy {
        warmup: 2,
        repeats: args.repeats,
        budget: Duration::from_secs(5),
    };
    let cpu_policy = RepeatPolicy {
        warmup: 1,
        repeats: args.cpu_repeats,
        budget: Duration::from_secs_f64(args.cpu_budget_s),
    };
    if !args.cpu {
        report.notes.push("CPU reference skipped (--no-cpu)".into());
    }
    if args.cold_bytes > 0 {
        report.notes.push(format!(
            "GPU inputs rotate through resident copies until the working set exceeds {} MiB (cold \
             L2), at most {} copies: activation quant of a few rows (under {} KiB per call) keeps \
             a smaller working set, which may stay in L2",
            args.cold_bytes >> 20,
            crate::gpu::MAX_COPIES,
            (args.cold_bytes / crate::gpu::MAX_COPIES) >> 10
        ));
    }

    let gpu = if args.gpu {
        Some(open_gpu(args, &mut report, &mut st)?)
    } else {
        report.notes.push("GPU skipped (--no-gpu)".into());
        None
    };
    let no_gpu = || Err::<StackTimes, String>("no GPU".into());

    if let Some(spec) = stack_spec {
        let mut s = StackResult {
            spec,
            matrices: spec.matrices().len(),
            packed_weight_bytes: spec.packed_weight_bytes(),
            bytes: spec.bytes(),
            gpu: None,
            gpu_wall: None,
            gpu_chained: None,
            gpu_chained_wall: None,
            gpu_chain: None,
            gpu_chain_wall: None,
            gpu_chain_fused: false,
            gpu_chain_back_to_back: None,
            gpu_error: None,
            cpu: None,
            cpu_error: None,
            gpu_pool: None,
        };
        if args.gpu {
            let (t, e) = st.step("GPU decode stack", || match &gpu {
                Some(g) => g.with_pool(|| g.time_stack(spec, gpu_policy)),
                None => no_gpu().map(|t| (t, PoolPeak::default())),
            });
            s.gpu = t.as_ref().map(|t| t.0.kernels.unwrap_or(t.0.wall));
            s.gpu_wall = t.as_ref().map(|t| t.0.wall);
            s.gpu_chained = t
                .as_ref()
                .map(|t| t.0.chained_kernels.unwrap_or(t.0.chained_wall));
            s.gpu_chained_wall = t.as_ref().map(|t| t.0.chained_wall);
            s.gpu_chain = t
                .as_ref()
                .map(|t| t.0.chain_kernels.unwrap_or(t.0.chain_wall));
            s.gpu_chain_wall = t.as_ref().map(|t| t.0.chain_wall);
            s.gpu_chain_fused = t.as_ref().is_some_and(|t| t.0.chain_fused);
            s.gpu_chain_back_to_back = t.as_ref().map(|t| t.0.chain_back_to_back);
            s.gpu_pool = t.map(|t| t.1);
            s.gpu_error = e;
        }
        if args.cpu {
            (s.cpu, s.cpu_error) = st.step("CPU decode stack", || {
                cpu::time_stack(spec, cpu_policy).map_err(|e| e.to_string())
            });
        }
        report.stack = Some(s);
        st.checkpoint(&report);
    }

    // Issue 4 and attention (cheap: seconds on a real GPU), before the long tail of cases.
    let sections = sections::Sections {
        args,
        gpu: gpu.as_ref(),
        gpu_policy,
        cpu_policy,
    };
    if do_stream {
        sections.stream(&mut st, &mut report);
    }
    if do_batch {
        sections.batch(&mut st, &mut report);
    }
    if do_overhead {
        sections.overhead(&mut st, &mut report);
    }
    if !attention.is_empty() {
        sections.attention(&mut st, &mut report, &attention);
    }

    for (i, w) in cases.iter().enumerate() {
        let id = w.id();
        if args.gpu {
            let (r, e) = st.step(&format!("GPU {id}"), || match &gpu {
                Some(g) => g.with_pool(|| g.time_case(w, gpu_policy, args.cold_bytes, false)),
                None => Err("no GPU".into()),
            });
            report.cases[i].gpu = r.map(|r| r.0);
            report.cases[i].gpu_pool = r.map(|r| r.1);
            report.cases[i].gpu_error = e;
            if w.op == OpKind::Bitlinear {
                report.cases[i].gpu_plan = gpu
                    .as_ref()
                    .and_then(|g| crate::gpu::plan_name(g.engine(), w.m, w.n, w.k));
            }
            // Memory-bound ops also back to back with their outputs kept (no barriers between
            // calls): the throughput that compares with the copy roofline.
            if w.memory_bound() && report.cases[i].gpu.is_some() {
                let (r, _) = st.step(&format!("GPU {id} overlapped"), || match &gpu {
                    Some(g) => g.time_case(w, gpu_policy, args.cold_bytes, true),
                    None => Err("no GPU".into()),
                });
                report.cases[i].gpu_overlapped = r;
            }
        }
        if args.cpu {
            let r = st.step(&format!("CPU {id}"), || {
                cpu::time_case(w, cpu_policy).map_err(|e| e.to_string())
            });
            (report.cases[i].cpu, report.cases[i].cpu_error) = r;
        }
        st.checkpoint(&report);
    }
    st.progress.close();
    if st.deadline.is_some_and(|d| Instant::now() >= d) {
        report.notes.push(format!(
            "--time-limit {} s reached: later steps were skipped",
            args.time_limit_s.unwrap_or(0.0)
        ));
    }
    drop(gpu);
    clock_keeper::stop();
    report.pool = pool::sections(&report);
    Ok(report)
}

/// How long the GPU is kept busy (the clock keeper's reads) before anything is measured.
const GPU_WARMUP: Duration = Duration::from_secs(3);

/// Opens the GPU engine and measures the copy roofline (one progress step). No usable adapter is
/// an error: the run is a GPU benchmark, and `--no-gpu` asks for the CPU reference alone.
fn open_gpu(args: &RunArgs, report: &mut Report, st: &mut Steps) -> Result<GpuBench> {
    st.progress
        .start("opening the GPU and measuring the copy roofline");
    let gpu = match guarded(|| GpuBench::open(args.tuning)) {
        Ok(g) => {
            let dev = g.device_report();
            if !g.timestamps() {
                report.notes.push("no TIMESTAMP_QUERY on this adapter: GPU times are submit + wait wall time (clock `wall`)".into());
            }
            let max = roofline_bytes(args.quick).min(g.max_binding().max(1 << 20));
            let policy = RepeatPolicy {
                warmup: 1,
                repeats: args.repeats.min(10),
                budget: Duration::from_secs(5),
            };
            // Bring the GPU to its working state first: on an idle H200 every kernel of the
            // first cases timed 2-4x slower until the clocks came up partway through a case.
            // The clock keeper then holds it there between timed batches.
            if g.start_clock_keeper(!args.clock_keeper) {
                report.clock_keeper = true;
                clock_keeper::heat(GPU_WARMUP);
            } else {
                report.notes.push(
                    "clock keeper off (software adapter or --no-clock-keeper): the GPU idles while the host records each timed batch".into(),
                );
            }
            let mut errors = Vec::new();
            for probe in [
                guarded(|| roofline::measure(max, args.repeats.min(10))),
                guarded(|| g.engine_elementwise(ElementwiseProbe::Copy, max, policy)),
            ] {
                match probe {
                    Ok(r) => report.copy_probes.push(r),
                    Err(e) => errors.push(e),
                }
            }
            // The roofline is the best copy this device did in this run.
            report.roofline = report
                .copy_probes
                .iter()
                .max_by(|a, b| a.gbps().total_cmp(&b.gbps()))
                .cloned();
            for op in [ElementwiseProbe::Add, ElementwiseProbe::Relu] {
                match guarded(|| g.engine_elementwise(op, max, policy)) {
                    Ok(r) => report.elementwise_probes.push(r),
                    Err(e) => report
                        .notes
                        .push(format!("elementwise probe: {}", one_line(&e))),
                }
            }
            if !errors.is_empty() {
                report.roofline_error = Some(one_line(&errors.join("; ")));
            }
            report.device = Some(dev);
            g
        }
        Err(e) => {
            st.progress.finish_step("opening the GPU", "no adapter");
            st.progress.close();
            return Err(BenchError::Gpu(format!(
                "not usable: {} (--no-gpu runs the CPU reference alone)",
                one_line(&e)
            )));
        }
    };
    let outcome = report
        .roofline
        .as_ref()
        .map_or("not measured".into(), |r| format!("{:.1} GB/s", r.gbps()));
    st.progress.finish_step("copy roofline", &outcome);
    st.checkpoint(report);
    Ok(gpu)
}

/// Checks what a run will write and read at its end before anything is measured: every output
/// path writable, the `--peers` file a peers JSON (a bad one used to surface after the run).
pub fn preflight(args: &RunArgs) -> Result<()> {
    for path in [&args.json, &args.svg, &args.results].into_iter().flatten() {
        crate::error::check_writable(path)?;
    }
    if let Some(p) = &args.peers {
        load_peers(p)?;
    }
    Ok(())
}

/// Prints the table and writes `--json`, `--svg` and `--results` as requested.
pub fn write_outputs(report: &Report, args: &RunArgs, command: &str) -> Result<()> {
    crate::error::print_to(&mut std::io::stdout(), &table::render(report))?;
    if let Some(path) = &args.json {
        let text =
            serde_json::to_string_pretty(report).map_err(|source| crate::BenchError::Json {
                path: path.clone(),
                source,
            })?;
        write_file(path, &text)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        write_file(path, &svg::render(report))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.results {
        let peers = match &args.peers {
            Some(p) => Some(load_peers(p)?),
            None => None,
        };
        if let Some(p) = &peers {
            check_same_device(report, p)?;
        }
        write_file(path, &results_md::render(report, peers.as_ref(), command))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Reads a peers JSON file.
pub fn load_peers(path: &std::path::Path) -> Result<PeersReport> {
    PeersReport::from_json(&read_file(path)?).map_err(|source| crate::BenchError::Json {
        path: path.into(),
        source,
    })
}

/// Refuses to merge a peers file measured on another GPU than ours: its ratios and the
/// verdicts built on them would compare two machines. Names are compared as the two APIs give
/// them (wgpu's adapter name, `torch.cuda.get_device_name()`), case and blanks aside; a run of
/// ours without a device (no GPU) has nothing to compare against a peer's.
pub fn check_same_device(ours: &Report, peers: &PeersReport) -> Result<()> {
    same_device(ours.device.as_ref().map(|d| d.name.as_str()), &peers.device)
}

/// [`check_same_device`] on the two names.
fn same_device(ours: Option<&str>, peers: &str) -> Result<()> {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    if ours.map(norm) == Some(norm(peers)) {
        return Ok(());
    }
    Err(crate::BenchError::Usage(format!(
        "the peers file was measured on {peers:?}, our run on {:?}: ratios across machines are \
         not comparisons; merge the files of one run on one machine",
        ours.unwrap_or("no GPU")
    )))
}

/// Reads one of our `--json` reports.
pub fn load_report(path: &std::path::Path) -> Result<Report> {
    serde_json::from_str(&read_file(path)?).map_err(|source| crate::BenchError::Json {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    /// Peers of another GPU (or a run of ours without one) are refused; names compare with case
    /// and blanks aside.
    #[test]
    fn merge_pairs_only_one_device() {
        assert!(super::same_device(Some("NVIDIA H200"), "nvidia  H200 ").is_ok());
        assert!(super::same_device(Some("NVIDIA H100 80GB HBM3"), "NVIDIA H200").is_err());
        assert!(
            super::same_device(Some("llvmpipe (LLVM 15.0.6, 256 bits)"), "NVIDIA H200").is_err()
        );
        assert!(super::same_device(None, "NVIDIA H200").is_err());
    }

    #[test]
    fn errors_become_one_short_line() {
        assert_eq!(super::one_line("a\n  b\tc\n"), "a b c");
        let long = "x ".repeat(400);
        let short = super::one_line(&long);
        assert!(short.ends_with('…') && short.chars().count() == 301);
        let p = super::guarded::<()>(|| panic!("boom"));
        assert_eq!(p.unwrap_err(), "panicked: boom");
    }
}
