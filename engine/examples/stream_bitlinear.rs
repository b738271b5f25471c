//! Streams ≥ 1 GiB of f32 activations through activation quant + BitLinear with
//! `Engine::stream_bitlinear` and reports the overlap figures of issue 4.
//!
//! `cargo run --release -p bitnet-wgpu --example stream_bitlinear -- [--mib 1024] [--rows 4096]`
//!
//! Prints: wall time of the stream; upload only (`Engine::stream_upload`, the same staging ring)
//! and its host→GPU GB/s; transfer only (uploads + read-backs of output-sized tensors); compute
//! only (quant + BitLinear on two resident chunks, alternating); and the overlap ratio
//! `stream / max(transfer only, compute only)` (issue 4 target ≤ 1.1). The weights are BitNet-2B4T's
//! k/v projection, `[640, 2560]`, as in the bench.

use std::time::{Duration, Instant};

use bitnet_wgpu::{DispatchPolicy, Engine, EngineOptions, Linear, cpu_ref};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> bitnet_wgpu::Result<()> {
    let (n, k) = (640, 2560);
    let (mib, rows) = (arg("--mib", 1024), arg("--rows", 4096));
    let e = Engine::gpu_with(EngineOptions {
        dispatch: DispatchPolicy::Gpu,
        ..EngineOptions::default()
    })?;
    println!("{}", e.info().adapter_name);
    let w = cpu_ref::quantize_weights(&vec![0.01f32; n * k], n, k)?;
    let layer = Linear::new(&e, w);
    // Two distinct chunks reused: the stream still moves every byte of every chunk.
    let chunk: Vec<Vec<f32>> = (0..2)
        .map(|c| {
            (0..rows * k)
                .map(|i| ((i * 7 + c) % 255) as f32 / 64.0 - 2.0)
                .collect()
        })
        .collect();
    let count = ((mib as u64) << 20).div_ceil((4 * rows * k) as u64).max(2) as usize;
    let chunks = || (0..count).map(|i| chunk[i % 2].as_slice());
    // Warm-up: pipelines, pool, staging ring.
    e.stream_bitlinear(chunks().take(2), &layer, |_, _| Ok(()))?;
    let st = e.stream_bitlinear(chunks(), &layer, |_, _| Ok(()))?;
    let gib = st.input_bytes as f64 / (1u64 << 30) as f64;
    println!(
        "stream: {count} chunks of {rows} x {k}, {gib:.2} GiB in {:.2} s ({:.2} GB/s of input); \
         host time: staging {:.2} s, waiting for a slot {:.2} s, for results {:.2} s",
        st.wall.as_secs_f64(),
        st.input_bytes_per_s() / 1e9,
        st.staging.as_secs_f64(),
        st.slot_wait.as_secs_f64(),
        st.result_wait.as_secs_f64()
    );
    let up = e.stream_upload(chunks())?;
    println!(
        "upload only: {:.2} s, host->GPU {:.2} GB/s (staging writes alone {:.2} GB/s)",
        up.wall.as_secs_f64(),
        up.input_bytes_per_s() / 1e9,
        up.staging_bytes_per_s() / 1e9
    );
    let reads = time(|| {
        let y = e.fill(&[rows, n], 1.0)?;
        e.sync()?;
        let t = Instant::now();
        for _ in 0..count {
            y.read_f32()?;
        }
        Ok(t.elapsed())
    })?;
    let transfer = up.wall + reads;
    let xs: Vec<_> = chunk
        .iter()
        .map(|c| e.upload_f32(c, &[rows, k]))
        .collect::<bitnet_wgpu::Result<_>>()?;
    let wt = layer.device_weights()?;
    let compute = time(|| {
        let t = Instant::now();
        for i in 0..count {
            let y = e.bitlinear_tensor(&xs[i % 2], &wt)?;
            if i % 8 == 7 {
                y.check()?;
            }
        }
        e.sync()?;
        Ok(t.elapsed())
    })?;
    println!(
        "transfer only: {:.2} s; compute only: {:.2} s; overlap ratio stream / max = {:.3} (target <= 1.1)",
        transfer.as_secs_f64(),
        compute.as_secs_f64(),
        st.wall.as_secs_f64() / transfer.max(compute).as_secs_f64()
    );
    Ok(())
}

fn time(f: impl FnOnce() -> bitnet_wgpu::Result<Duration>) -> bitnet_wgpu::Result<Duration> {
    f()
}
