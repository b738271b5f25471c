//! One measuring run: pick the workloads, time GPU and CPU, assemble the [`Report`], write the
//! requested outputs. A failing case is recorded and the run goes on.

use crate::cli::RunArgs;
use crate::error::{Result, read_file, write_file};
use crate::gpu::GpuBench;
use crate::measure::RepeatPolicy;
use crate::peers::PeersReport;
use crate::progress::Progress;
use crate::report::{CaseResult, Report, SCHEMA, StackResult};
use crate::workload::{SHAPES, StackSpec, TOKEN_COUNTS, Workload, workloads};
use crate::{cpu, date, fmt, results_md, roofline, svg, table};
use std::time::Duration;

/// Id `--filter` matches against for the decode stack.
pub const STACK_ID: &str = "stack decode 2B4T";

/// Bytes per copy-kernel buffer (two of them): 512 MiB on a real GPU, less in `--quick`.
fn roofline_bytes(quick: bool) -> u64 {
    if quick { 64 << 20 } else { 512 << 20 }
}

/// Runs the benchmark as `args` says; `command` is the exact command line, for the record.
pub fn run(args: &RunArgs, command: &str) -> Result<Report> {
    let (shapes, tokens): (&[_], &[usize]) =
        if args.quick { (&SHAPES[..4], &TOKEN_COUNTS[..2]) } else { (SHAPES, TOKEN_COUNTS) };
    let cases: Vec<Workload> = workloads(shapes, tokens).into_iter().filter(|w| args.selects(&w.id())).collect();
    let stack_spec = args.selects(STACK_ID).then_some(StackSpec { layers: args.layers, ..StackSpec::DECODE_2B4T });
    let sides = usize::from(args.gpu) + usize::from(args.cpu);
    let steps = usize::from(args.gpu) + sides * (cases.len() + usize::from(stack_spec.is_some()));
    let mut progress = Progress::new(steps, args.progress);

    let mut report = Report {
        schema: SCHEMA.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        date_utc: date::now_utc(),
        command: command.into(),
        quick: args.quick,
        device: None,
        host: cpu::host(),
        roofline: None,
        roofline_error: None,
        cases: cases.iter().map(CaseResult::new).collect(),
        stack: None,
        notes: Vec::new(),
    };

    let gpu_policy = RepeatPolicy { warmup: 2, repeats: args.repeats, budget: Duration::from_secs(5) };
    let cpu_policy = RepeatPolicy {
        warmup: 1,
        repeats: args.cpu_repeats,
        budget: Duration::from_secs_f64(args.cpu_budget_s),
    };

    let gpu = if args.gpu {
        progress.start("opening the GPU and measuring the copy roofline");
        match GpuBench::open() {
            Ok(g) => {
                let dev = g.device_report();
                if !g.timestamps() {
                    report.notes.push("no TIMESTAMP_QUERY on this adapter: GPU times are submit + wait wall time (clock `wall`)".into());
                }
                let max = roofline_bytes(args.quick).min(g.max_binding().max(1 << 20));
                match roofline::measure(Some(&dev.name), max, args.repeats.min(10)) {
                    Ok(r) => report.roofline = Some(r),
                    Err(e) => report.roofline_error = Some(e),
                }
                report.device = Some(dev);
                Some(g)
            }
            Err(e) => {
                report.notes.push(format!("no GPU measured: {e}"));
                None
            }
        }
    } else {
        report.notes.push("GPU skipped (--no-gpu)".into());
        None
    };
    if args.gpu {
        let outcome = report.roofline.as_ref().map_or("not measured".into(), |r| format!("{:.1} GB/s", r.gbps()));
        progress.finish_step("copy roofline", &outcome);
    }
    if !args.cpu {
        report.notes.push("CPU reference skipped (--no-cpu)".into());
    }
    if args.cold_bytes > 0 {
        report.notes.push(format!(
            "GPU inputs rotate through resident copies until the working set exceeds {} MiB (cold L2)",
            args.cold_bytes >> 20
        ));
    }

    for (w, result) in cases.iter().zip(report.cases.iter_mut()) {
        let id = w.id();
        if args.gpu {
            progress.start(&format!("GPU {id}"));
            match &gpu {
                Some(g) => match g.time_case(w, gpu_policy, args.cold_bytes) {
                    Ok(m) => result.gpu = Some(m),
                    Err(e) => result.gpu_error = Some(e),
                },
                None => result.gpu_error = Some("no GPU".into()),
            }
            progress.finish_step(&format!("GPU {id}"), &outcome(result.gpu.map(|m| m.median_ms), &result.gpu_error));
        }
        if args.cpu {
            progress.start(&format!("CPU {id}"));
            match cpu::time_case(w, cpu_policy) {
                Ok(m) => result.cpu = Some(m),
                Err(e) => result.cpu_error = Some(e.to_string()),
            }
            progress.finish_step(&format!("CPU {id}"), &outcome(result.cpu.map(|m| m.median_ms), &result.cpu_error));
        }
    }

    if let Some(spec) = stack_spec {
        let mut s = StackResult {
            spec,
            matrices: spec.matrices().len(),
            packed_weight_bytes: spec.packed_weight_bytes(),
            bytes: spec.bytes(),
            gpu: None,
            gpu_wall: None,
            gpu_error: None,
            cpu: None,
            cpu_error: None,
        };
        if args.gpu {
            progress.start("GPU decode stack");
            match &gpu {
                Some(g) => match g.time_stack(spec, gpu_policy) {
                    Ok(t) => {
                        s.gpu = t.kernels.or(Some(t.wall));
                        s.gpu_wall = Some(t.wall);
                    }
                    Err(e) => s.gpu_error = Some(e),
                },
                None => s.gpu_error = Some("no GPU".into()),
            }
            progress.finish_step("GPU decode stack", &outcome(s.gpu.map(|m| m.median_ms), &s.gpu_error));
        }
        if args.cpu {
            progress.start("CPU decode stack");
            match cpu::time_stack(spec, cpu_policy) {
                Ok(m) => s.cpu = Some(m),
                Err(e) => s.cpu_error = Some(e.to_string()),
            }
            progress.finish_step("CPU decode stack", &outcome(s.cpu.map(|m| m.median_ms), &s.cpu_error));
        }
        report.stack = Some(s);
    }
    progress.close();
    drop(gpu);
    Ok(report)
}

/// Prints the table and writes `--json`, `--svg` and `--results` as requested.
pub fn write_outputs(report: &Report, args: &RunArgs, command: &str) -> Result<()> {
    print!("{}", table::render(report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|source| crate::BenchError::Json { path: path.clone(), source })?;
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
        write_file(path, &results_md::render(report, peers.as_ref(), command))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Reads a peers JSON file.
pub fn load_peers(path: &std::path::Path) -> Result<PeersReport> {
    PeersReport::from_json(&read_file(path)?)
        .map_err(|source| crate::BenchError::Json { path: path.into(), source })
}

/// Reads one of our `--json` reports.
pub fn load_report(path: &std::path::Path) -> Result<Report> {
    serde_json::from_str(&read_file(path)?).map_err(|source| crate::BenchError::Json { path: path.into(), source })
}

fn outcome(ms: Option<f64>, err: &Option<String>) -> String {
    match (ms, err) {
        (Some(ms), _) => fmt::time_ms(ms),
        (None, Some(e)) => format!("not measured: {e}"),
        (None, None) => "not measured".into(),
    }
}
