//! Where one BitLinear call's GPU time goes: each dispatch of a serial call, by kernel, beside the
//! call's whole span — for the batched and prefill shapes, whose plans are several dispatches
//! (activation quantization, GEMM, K-slice sum) and where the bench reports only the total.
//!
//! ```sh
//! cargo run --release -p bitnet-bench --example op_profile                  # 2B4T + 8B, M = 8, 64, 512
//! cargo run --release -p bitnet-bench --example op_profile -- 64x2560x2560 8x6912x2560
//! cargo run --release -p bitnet-bench --example op_profile -- --tuning fuse=0 8x2560x2560
//! ```
//!
//! `--tuning SPEC` forces plans as `bitnet-bench --tuning` does (`bitnet-bench --help`).
//!
//! Each case: 5 warm calls, then 20 calls each followed by `Engine::sync`, once with a timestamp
//! pair around every dispatch (per-kernel times, which the pairs perturb a little) and once with
//! one pair per batch (the call's span, gaps between its dispatches included).

use bitnet_bench::data;
use bitnet_bench::gpu::GpuBench;
use bitnet_wgpu::{Engine, ProfileGranularity, Tensor};
use std::error::Error;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The cases run when no argument is given, as `M x N x K`.
const DEFAULT_SET: &[(usize, usize, usize)] = &[
    (8, 2560, 2560),
    (8, 6912, 2560),
    (8, 2560, 6912),
    (64, 2560, 2560),
    (64, 640, 2560),
    (64, 6912, 2560),
    (64, 2560, 6912),
    (64, 14336, 4096),
    (512, 2560, 2560),
    (512, 6912, 2560),
];

const WARM: usize = 5;
const CALLS: usize = 20;

fn parse(arg: &str) -> Result<(usize, usize, usize)> {
    let v: Vec<usize> = arg
        .split('x')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    match v.as_slice() {
        &[m, n, k] => Ok((m, n, k)),
        _ => Err(format!("expected MxNxK, got {arg}").into()),
    }
}

/// Runs `CALLS` serial calls of `x · wᵀ` under `granularity`; the engine's report afterwards.
fn profile(
    e: &Engine,
    x: &Tensor,
    w: &Tensor,
    granularity: ProfileGranularity,
) -> Result<Vec<(&'static str, u64, u64)>> {
    e.set_profiling_granularity(granularity)?;
    for _ in 0..WARM {
        drop(e.bitlinear_tensor(x, w)?);
        e.sync()?;
    }
    e.reset_profile();
    for _ in 0..CALLS {
        drop(e.bitlinear_tensor(x, w)?);
        e.sync()?;
    }
    Ok(e.profile_report()?.entries)
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tuning = match args.iter().position(|a| a == "--tuning") {
        Some(i) if i + 1 < args.len() => {
            let spec = args.remove(i + 1);
            args.remove(i);
            Some(bitnet_bench::cli::tuning(&spec)?)
        }
        Some(_) => return Err("--tuning needs a SPEC".into()),
        None => None,
    };
    let cases = if args.is_empty() {
        DEFAULT_SET.to_vec()
    } else {
        args.iter().map(|a| parse(a)).collect::<Result<_>>()?
    };
    let bench = GpuBench::open(None)?;
    if !bench.timestamps() {
        return Err("this adapter has no timestamp queries: nothing to profile".into());
    }
    bench.start_clock_keeper(false);
    let e = bench.engine();
    if let Some(t) = tuning {
        e.set_bitnet_tuning(t);
    }
    let info = e.info();
    println!(
        "adapter: {} ({}, {})",
        info.adapter_name, info.backend, info.driver_info
    );
    for (m, n, k) in cases {
        let w = e.upload_ternary(&data::ternary(n, k, 7)?)?;
        let x = e.upload_f32(&data::floats(m * k, 11), &[m, k])?;
        let span = profile(e, &x, &w, ProfileGranularity::Batch)?;
        let per_kernel = profile(e, &x, &w, ProfileGranularity::Dispatch)?;
        let span_us = span
            .first()
            .map_or(0.0, |s| s.2 as f64 / 1e3 / CALLS as f64);
        println!("M={m} N={n} K={k}: span {span_us:.2} µs per call");
        for (name, calls, ns) in per_kernel {
            println!(
                "    {:>8.2} µs  {:>4.1} per call  {name}",
                ns as f64 / 1e3 / calls.max(1) as f64,
                calls as f64 / CALLS as f64
            );
        }
    }
    Ok(())
}
