//! Issue 4's streaming measurement: ≥ 1 GiB of f32 activations, in chunks, through activation
//! quant + BitLinear against one resident weight ([`bitnet_wgpu::Linear`]), outputs delivered to
//! the host — through the engine's streaming API.
//!
//! Four wall-clock runs over the same chunks (profiler off):
//! * **total**: [`Engine::stream_bitlinear`] over every chunk (staging ring upload, quant +
//!   BitLinear, read-back, overlapped by the engine; outputs delivered in order to a sink);
//! * **upload only**: [`Engine::stream_upload`] over the same chunks — the stream's host→GPU leg
//!   alone, through the same staging ring (host→GPU GB/s);
//! * **transfer only**: that upload leg with, concurrently on a second thread, one read-back of
//!   an output-sized tensor per chunk (both transfer directions, no compute);
//! * **compute only**: BitLinear on resident chunks (two rotating), no transfer.
//!
//! Target: total ≤ 1.1 × max(transfer only, compute only). The engine path used is named in the
//! result ([`StreamResult::path`]), and the chunks the engine's dispatch policy sent to the CPU
//! are counted ([`StreamResult::cpu_chunks`]; the figures mean what they say only when it is 0).

use crate::data;
use crate::measure::{Clock, Measurement};
use bitnet_wgpu::{Engine, Linear};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Id `--filter` matches against.
pub const STREAM_ID: &str = "stream act_quant+bitlinear 2B k/v 640x2560";

/// The overlap target of issue 4.
pub const STREAM_GOAL: f64 = 1.1;

/// The streamed BitLinear: BitNet-2B4T's k/v projection (output a quarter of the input bytes).
const N: usize = 640;
/// Input features.
const K: usize = 2560;

/// What was streamed and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamResult {
    /// Weight rows (output features).
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Activation rows per chunk.
    pub chunk_rows: usize,
    /// Chunks streamed.
    pub chunks: usize,
    /// f32 activation bytes uploaded in all.
    pub input_bytes: u64,
    /// f32 output bytes read back in all.
    pub output_bytes: u64,
    /// The engine calls used.
    pub path: String,
    /// Upload + compute + read-back, all chunks (wall).
    pub total: Option<Measurement>,
    /// Uploads only (wall).
    pub upload_only: Option<Measurement>,
    /// Uploads + read-backs, no compute (wall).
    pub transfer_only: Option<Measurement>,
    /// Compute on resident chunks, no transfer (wall).
    pub compute_only: Option<Measurement>,
    /// Chunks of the timed total run computed on the GPU.
    #[serde(default)]
    pub gpu_chunks: usize,
    /// Chunks of the timed total run the engine computed on the CPU (policy or fallback).
    #[serde(default)]
    pub cpu_chunks: usize,
    /// Host→GPU GB/s of host time spent writing into the staging ring (`stream_upload`).
    #[serde(default)]
    pub staging_gbps: Option<f64>,
    /// Where the caller's thread spent the last timed total run (the engine's `StreamStats`).
    #[serde(default)]
    pub host: Option<StreamHost>,
    /// Why figures are missing, if they are.
    pub error: Option<String>,
}

/// The caller thread's time in one `stream_bitlinear` run, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StreamHost {
    /// The whole stream.
    pub wall_ms: f64,
    /// Writing chunks into the mapped staging ring.
    pub staging_ms: f64,
    /// Waiting for a free staging slot (the GPU was behind).
    pub slot_wait_ms: f64,
    /// Waiting for results (the GPU or the read-back was behind).
    pub result_wait_ms: f64,
}

impl StreamHost {
    fn of(st: &bitnet_wgpu::StreamStats) -> StreamHost {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        StreamHost {
            wall_ms: ms(st.wall),
            staging_ms: ms(st.staging),
            slot_wait_ms: ms(st.slot_wait),
            result_wait_ms: ms(st.result_wait),
        }
    }
}

impl StreamResult {
    /// Host→GPU throughput of the uploads alone, GB/s (10^9).
    pub fn h2d_gbps(&self) -> Option<f64> {
        Some(crate::report::gbps(
            self.input_bytes,
            self.upload_only?.median_ms,
        ))
    }

    /// total / max(transfer only, compute only): 1.0 is perfect overlap (target ≤ 1.1).
    pub fn overlap_ratio(&self) -> Option<f64> {
        let t = self.total?.median_ms;
        let bound = self
            .transfer_only?
            .median_ms
            .max(self.compute_only?.median_ms);
        Some(t / bound)
    }
}

/// Chunk rows and count for about `total_bytes` of f32 activations (≥ `total_bytes`).
pub fn plan(total_bytes: u64, quick: bool) -> (usize, usize) {
    let rows = if quick { 1024 } else { 4096 };
    let chunk_bytes = (rows * K * 4) as u64;
    (rows, total_bytes.div_ceil(chunk_bytes).max(2) as usize)
}

/// A result with no figures, only why (the step failed or was skipped).
pub fn failed(total_bytes: u64, quick: bool, error: String) -> StreamResult {
    let mut r = empty(total_bytes, quick);
    r.error = Some(error);
    r
}

fn empty(total_bytes: u64, quick: bool) -> StreamResult {
    let (rows, chunks) = plan(total_bytes, quick);
    StreamResult {
        n: N,
        k: K,
        chunk_rows: rows,
        chunks,
        input_bytes: (chunks * rows * K * 4) as u64,
        output_bytes: (chunks * rows * N * 4) as u64,
        path: "Linear::new + Engine::stream_bitlinear (staging ring, quant + BitLinear, read-back overlapped); upload only: Engine::stream_upload".into(),
        total: None,
        upload_only: None,
        transfer_only: None,
        compute_only: None,
        gpu_chunks: 0,
        cpu_chunks: 0,
        staging_gbps: None,
        host: None,
        error: None,
    }
}

/// Runs the four streaming measurements, `repeats` times each (median), on `total_bytes` of f32.
pub fn measure(e: &Engine, total_bytes: u64, quick: bool, repeats: usize) -> StreamResult {
    let mut r = empty(total_bytes, quick);
    if let Err(err) = run_all(e, &mut r, repeats.max(1)) {
        r.error = Some(err);
    }
    r
}

fn run_all(e: &Engine, r: &mut StreamResult, repeats: usize) -> Result<(), String> {
    let err = |x: bitnet_wgpu::Error| x.to_string();
    let (rows, chunks) = (r.chunk_rows, r.chunks);
    let chunk_len = rows * K;
    // The whole input lives on the host (≥ 1 GiB): one random chunk, replicated.
    let seed_chunk = data::floats(chunk_len, 77);
    let mut host = Vec::with_capacity(chunks * chunk_len);
    for _ in 0..chunks {
        host.extend_from_slice(&seed_chunk);
    }
    let layer = Linear::new(e, data::ternary(N, K, 78).map_err(|x| x.to_string())?);
    let w = layer.device_weights().map_err(err)?;
    let resident = [
        e.upload_f32(&seed_chunk, &[rows, K]).map_err(err)?,
        e.upload_f32(&seed_chunk, &[rows, K]).map_err(err)?,
    ];
    let out_like = e.fill(&[rows, N], 0.0).map_err(err)?;
    let pieces = || host.chunks(chunk_len);

    // The four measurements run interleaved, round by round (one sample of each per round), so
    // a drift of the host's memory bandwidth or the GPU's clocks over the run moves all four
    // alike and the overlap ratio compares like with like.
    let mut last = None;
    let mut staging = Vec::new();
    let mut total = || {
        let mut delivered = 0usize;
        let st = e
            .stream_bitlinear(pieces(), &layer, |_, y| {
                delivered += y.len();
                Ok(())
            })
            .map_err(err)?;
        if delivered != chunks * rows * N {
            return Err(format!("the stream delivered {delivered} outputs"));
        }
        last = Some(st);
        Ok(())
    };
    let mut upload_only = || {
        let st = e.stream_upload(pieces()).map_err(err)?;
        staging.push(st.staging_bytes_per_s() / 1e9);
        Ok(())
    };
    let mut transfer_only = || {
        std::thread::scope(|s| {
            let reads = s.spawn(|| {
                for _ in 0..chunks {
                    out_like.read_f32().map_err(err)?;
                }
                Ok::<(), String>(())
            });
            let up = e.stream_upload(pieces()).map(drop).map_err(err);
            let reads = reads
                .join()
                .unwrap_or_else(|_| Err("the read-back thread panicked".into()));
            up.and(reads)
        })
    };
    let mut compute_only = || {
        for i in 0..chunks {
            drop(e.bitlinear_tensor(&resident[i % 2], &w).map_err(err)?);
        }
        Ok(())
    };
    let mut kinds: [&mut dyn FnMut() -> Result<(), String>; 4] = [
        &mut total,
        &mut upload_only,
        &mut transfer_only,
        &mut compute_only,
    ];
    let mut samples: [Vec<f64>; 4] = Default::default();
    // Round 0 is the warmup (pipelines, pool growth, staging ring).
    for round in 0..=repeats {
        for (f, out) in kinds.iter_mut().zip(samples.iter_mut()) {
            let t = Instant::now();
            f()?;
            e.sync().map_err(err)?;
            if round > 0 {
                out.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let [t, u, x, c] = samples.map(|v| Measurement::from_samples(&v, Clock::Wall));
    (r.total, r.upload_only, r.transfer_only, r.compute_only) = (t, u, x, c);
    if r.total.is_none() {
        return Err("no samples".into());
    }
    if let Some(st) = last {
        (r.gpu_chunks, r.cpu_chunks) = (st.gpu_chunks, st.cpu_chunks);
        r.host = Some(StreamHost::of(&st));
    }
    staging.sort_by(f64::total_cmp);
    r.staging_gbps = staging.get(staging.len() / 2).copied();
    if r.cpu_chunks > 0 {
        r.error = Some(format!(
            "the engine's dispatch policy ran {} of {} chunks on the CPU",
            r.cpu_chunks, chunks
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_bytes_and_ratios_derive() {
        let (rows, chunks) = plan(1 << 30, false);
        assert!((rows * chunks * K * 4) as u64 >= 1 << 30);
        assert_eq!((rows, chunks), (4096, 26));
        let ms = |v| Measurement {
            median_ms: v,
            min_ms: v,
            max_ms: v,
            samples: 1,
            clock: Clock::Wall,
            calls_per_sample: 1,
        };
        let r = StreamResult {
            n: N,
            k: K,
            chunk_rows: rows,
            chunks,
            input_bytes: 2_000_000_000,
            output_bytes: 0,
            path: String::new(),
            total: Some(ms(110.0)),
            upload_only: Some(ms(80.0)),
            transfer_only: Some(ms(100.0)),
            compute_only: Some(ms(50.0)),
            gpu_chunks: chunks,
            cpu_chunks: 0,
            staging_gbps: None,
            host: None,
            error: None,
        };
        assert_eq!(r.h2d_gbps(), Some(25.0));
        assert!((r.overlap_ratio().unwrap() - 1.1).abs() < 1e-12);
    }
}
