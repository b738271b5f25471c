//! Where one BitLinear call's GPU time goes: each dispatch of a serial call, by kernel, beside the
//! call's whole span — for the batched and prefill shapes, whose plans are several dispatches
//! (activation quantization, GEMM, K-slice sum) and where the bench reports only the total.
//!
//! ```sh
//! cargo run --release -p bitnet-bench --example op_profile                  # 2B4T + 8B, M = 8, 64, 512
//! cargo run --release -p bitnet-bench --example op_profile -- 64x2560x2560 8x6912x2560
//! cargo run --release -p bitnet-bench --example op_profile -- --tuning fuse=0 8x2560x2560
//! cargo run --release -p bitnet-bench --example op_profile -- mm:512x2560x2560 mmh:512x2560x2560
//! ```
//!
//! `mm:` and `mmh:` cases time the float matmul instead (`Engine::matmul` on `F32`,
//! `Engine::matmul_f16` on `F16`: `[M, K] · [K, N]`), whose kernel has no place in the bench;
//! `mmbt:` and `mmhbt:` its transposed form (`matmul_bt`, `matmul_bt_f16`: `[M, K] · [N, K]ᵀ`, as
//! a model's logits against its embedding).
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

/// What one case times.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    BitLinear,
    MatmulF32,
    MatmulF16,
    MatmulBtF32,
    MatmulBtF16,
}

fn parse(arg: &str) -> Result<(Op, (usize, usize, usize))> {
    let (op, shape) = if let Some(rest) = arg.strip_prefix("mmbt:") {
        (Op::MatmulBtF32, rest)
    } else if let Some(rest) = arg.strip_prefix("mmhbt:") {
        (Op::MatmulBtF16, rest)
    } else if let Some(rest) = arg.strip_prefix("mm:") {
        (Op::MatmulF32, rest)
    } else if let Some(rest) = arg.strip_prefix("mmh:") {
        (Op::MatmulF16, rest)
    } else {
        (Op::BitLinear, arg)
    };
    Ok((op, parse_shape(shape)?))
}

fn parse_shape(arg: &str) -> Result<(usize, usize, usize)> {
    let v: Vec<usize> = arg
        .split('x')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    match v.as_slice() {
        &[m, n, k] => Ok((m, n, k)),
        _ => Err(format!("expected MxNxK, got {arg}").into()),
    }
}

/// One call of `op` on `x` and `w`.
fn call(e: &Engine, op: Op, x: &Tensor, w: &Tensor) -> bitnet_wgpu::Result<Tensor> {
    match op {
        Op::BitLinear => e.bitlinear_tensor(x, w),
        Op::MatmulF32 => e.matmul(x, w),
        Op::MatmulF16 => e.matmul_f16(x, w),
        Op::MatmulBtF32 => e.matmul_bt(x, w),
        Op::MatmulBtF16 => e.matmul_bt_f16(x, w),
    }
}

/// Runs `CALLS` serial calls of `op` under `granularity`; the engine's report afterwards.
fn profile(
    e: &Engine,
    op: Op,
    x: &Tensor,
    w: &Tensor,
    granularity: ProfileGranularity,
) -> Result<Vec<(&'static str, u64, u64)>> {
    e.set_profiling_granularity(granularity)?;
    for _ in 0..WARM {
        drop(call(e, op, x, w)?);
        e.sync()?;
    }
    e.reset_profile();
    for _ in 0..CALLS {
        drop(call(e, op, x, w)?);
        e.sync()?;
    }
    Ok(e.profile_report()?.entries)
}

fn main() -> Result<()> {
    // Warnings show (a kernel override in use, a fallback): a probe must say what it ran.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
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
        DEFAULT_SET
            .iter()
            .map(|&c| (Op::BitLinear, c))
            .collect::<Vec<_>>()
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
    for (op, (m, n, k)) in cases {
        let (x, w) = operands(e, op, m, n, k)?;
        let span = profile(e, op, &x, &w, ProfileGranularity::Batch)?;
        let per_kernel = profile(e, op, &x, &w, ProfileGranularity::Dispatch)?;
        let span_us = span
            .first()
            .map_or(0.0, |s| s.2 as f64 / 1e3 / CALLS as f64);
        let tflops = match op {
            Op::BitLinear => String::new(),
            _ => format!(", {:.2} TFLOP/s", 2.0 * (m * n * k) as f64 / span_us / 1e6),
        };
        println!("{op:?} M={m} N={n} K={k}: span {span_us:.2} µs per call{tflops}");
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

/// The shape of a matmul's second operand: `[K, N]`, or `[N, K]` for the transposed forms.
fn b_shape(op: Op, n: usize, k: usize) -> [usize; 2] {
    match op {
        Op::MatmulBtF32 | Op::MatmulBtF16 => [n, k],
        _ => [k, n],
    }
}

/// The resident operands of a case: BitLinear's f32 `[M, K]` activations and ternary `[N, K]`
/// weights, or matmul's `[M, K]` and `[K, N]` floats.
fn operands(e: &Engine, op: Op, m: usize, n: usize, k: usize) -> Result<(Tensor, Tensor)> {
    let x = data::floats(m * k, 11);
    Ok(match op {
        Op::BitLinear => (
            e.upload_f32(&x, &[m, k])?,
            e.upload_ternary(&data::ternary(n, k, 7)?)?,
        ),
        Op::MatmulF32 | Op::MatmulBtF32 => (
            e.upload_f32(&x, &[m, k])?,
            e.upload_f32(&data::floats(k * n, 7), &b_shape(op, n, k))?,
        ),
        Op::MatmulF16 | Op::MatmulBtF16 => {
            let h = |v: Vec<f32>| {
                v.into_iter()
                    .map(bitnet_wgpu::half::f16::from_f32)
                    .collect::<Vec<_>>()
            };
            (
                e.upload_f16(&h(x), &[m, k])?,
                e.upload_f16(&h(data::floats(k * n, 7)), &b_shape(op, n, k))?,
            )
        }
    })
}
