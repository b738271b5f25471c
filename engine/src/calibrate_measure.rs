//! Measuring a [`Calibration`]: timing both backends at two sizes per op class and fitting each
//! class's cost line (see `calibrate.rs` for the model and the cache).

use std::cell::Cell;
use std::time::Instant;

use super::{Calibration, Cost, OpClass};
// cpu-ref's timings: their rayon splits go to the batchers' pool when a batch's first decision
// calibrates on a batcher thread (every global worker may be waiting in `forward` there).
use crate::batching::cpu_work;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ops::TuneProfiler;
use crate::workload::Workload;

thread_local! {
    /// The id of the GPU context this thread is measuring, if any (see [`measuring`]).
    static MEASURING: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Whether this thread is measuring `gpu`: its ops then run on the GPU whatever the engine's
/// policy. The policy is checked once, before measuring; another thread may set it to `Cpu`
/// meanwhile, and the ops would then take their CPU paths and time cpu-ref as the GPU.
pub(crate) fn measuring(gpu: &Gpu) -> bool {
    MEASURING.with(|m| m.get() == Some(gpu.id))
}

/// Marks this thread as measuring one GPU context until dropped (on error paths too).
struct Measuring(Option<u64>);

impl Measuring {
    fn start(gpu: &Gpu) -> Measuring {
        Measuring(MEASURING.with(|m| m.replace(Some(gpu.id))))
    }
}

impl Drop for Measuring {
    fn drop(&mut self) {
        MEASURING.with(|m| m.set(self.0));
    }
}

/// Minimum wall time of `f` over a warm-up and `runs` runs.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Timed runs of each 8 MiB transfer that measures the link's bandwidths (the best one counts).
const TRANSFER_RUNS: usize = 4;

/// Deterministic inputs (a multiplicative hash; no RNG dependency).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            ((i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 8) as f32 / 8_388_608.0) - 1.0
        })
        .collect()
}

/// `(m, n, k)` of one BitLinear measurement.
type LinearSize = (usize, usize, usize);

/// Two measurement sizes per class: `(m_or_n, k)` for quantization, `(m, n, k)` for BitLinear.
pub(super) const LINEAR_SIZES: [(OpClass, [LinearSize; 2]); 2] = [
    (OpClass::LinearGemv, [(1, 256, 256), (1, 2048, 2048)]),
    (OpClass::LinearGemm, [(16, 256, 256), (64, 1024, 1024)]),
];
pub(super) const QUANT_SIZES: [(OpClass, [(usize, usize); 2]); 2] = [
    (OpClass::QuantizeWeights, [(64, 256), (1024, 2048)]),
    (OpClass::QuantizeActivations, [(16, 256), (256, 4096)]),
];

/// The workload of one measured GPU call of `class` at `(rows, n, k)` (`n` unused for
/// quantization; BitLinear weights are resident, as in [`measure`]).
pub(super) fn sample(class: OpClass, (rows, n, k): LinearSize) -> Workload {
    match class {
        OpClass::QuantizeWeights => Workload::quantize_weights(rows, k),
        OpClass::QuantizeActivations => Workload::quantize_activations(rows, k),
        OpClass::LinearGemv | OpClass::LinearGemm => Workload::bitlinear(rows, n, k, true),
    }
}

/// The GPU cost line through two timed calls `(workload, wall seconds)`. Each call's transfers
/// at the measured bandwidths are taken out first, counted exactly as the prediction adds them
/// back (`Workload::upload_bytes` / `download_bytes`, `Dispatcher::raw`): fitted cost plus
/// transfers then reproduces the measured times.
///
/// At most [`MAX_TRANSFER_SHARE`] of a call's wall time is taken out: a bandwidth measured
/// during a stall of the host (another process on every core) can price a call's transfers
/// above its whole wall time, which left a GPU cost of zero, and `Auto` then sent every op of
/// that class to the GPU, however small, until run-time adaptation caught up. Calls whose
/// transfers really take most of their time (an 8 MiB upload over a slow link) stay exact up to
/// that share.
pub(super) fn fit_gpu(calls: [(Workload, f64); 2], up_bw: f64, down_bw: f64) -> Cost {
    let [a, b] = calls.map(|(w, wall)| {
        let moved = w.upload_bytes() / up_bw + w.download_bytes() / down_bw;
        (
            w.units() as f64,
            wall - moved.min(MAX_TRANSFER_SHARE * wall),
        )
    });
    Cost::fit(a, b)
}

/// The largest share of a timed GPU call's wall time [`fit_gpu`] counts as its transfers: the
/// call also launched a kernel and waited for it, which is never free.
const MAX_TRANSFER_SHARE: f64 = 0.99;

/// Times both backends of `engine` (a GPU engine): see the module docs. Its GPU runs use the GPU
/// whatever the policy is set to meanwhile ([`measuring`]).
pub(crate) fn measure(engine: &Engine, gpu: &Gpu) -> Result<Calibration> {
    measure_with(engine, gpu, |_| ())
}

/// [`measure`], calling `before(class)` before each op class is timed (tests lose the device
/// there).
pub(crate) fn measure_with(
    engine: &Engine,
    gpu: &Gpu,
    mut before: impl FnMut(OpClass),
) -> Result<Calibration> {
    let _pinned = Measuring::start(gpu);
    // The measuring runs with the profiler off (a private, disabled one stands in for the
    // engine's): its dispatches stay out of the user's report, and timestamp writes do not
    // perturb its wall times. Dropped on an error path, it still puts the engine's back.
    let quiet = TuneProfiler::start(gpu, false)?;
    let started = Instant::now();
    let bytes = 8usize << 20;
    let big = values(bytes / 4, 1);
    // Best of more runs than the ops get: a stall through every transfer timed here would
    // price the GPU calls' transfers above their whole wall times (see `fit_gpu`).
    let up = time(TRANSFER_RUNS, || {
        let t = engine.upload_f32(&big, &[big.len()])?;
        engine.sync()?;
        drop(t);
        Ok(())
    })?;
    let resident = engine.upload_f32(&big, &[big.len()])?;
    let down = time(TRANSFER_RUNS, || resident.read_f32().map(drop))?;
    drop(resident);
    let (up_bw, down_bw) = (bytes as f64 / up, bytes as f64 / down);
    let mut c = Calibration {
        key: Calibration::key_of(gpu),
        upload_bytes_per_s: up_bw,
        download_bytes_per_s: down_bw,
        cpu: [Cost::default(); 4],
        gpu: [Cost::default(); 4],
    };
    for (class, sizes) in QUANT_SIZES {
        before(class);
        let mut cpu = [(0.0, 0.0); 2];
        let mut gpu_t = [(sample(class, (0, 0, 0)), 0.0); 2];
        for (i, &(rows, k)) in sizes.iter().enumerate() {
            let x = values(rows * k, i as u32 + 7);
            let units = (rows * k) as f64;
            let (tc, tg) = match class {
                OpClass::QuantizeWeights => (
                    time(3, || {
                        cpu_work(|| bitnet_cpu_ref::quantize_weights(&x, rows, k))
                            .map(drop)
                            .map_err(Error::from)
                    })?,
                    time(3, || {
                        let t = engine.upload_f32(&x, &[rows, k])?;
                        engine.quantize_weights_tensor(&t)?.read_ternary().map(drop)
                    })?,
                ),
                _ => (
                    time(3, || {
                        cpu_work(|| bitnet_cpu_ref::quantize_activations(&x, rows, k))
                            .map(drop)
                            .map_err(Error::from)
                    })?,
                    time(3, || {
                        let t = engine.upload_f32(&x, &[rows, k])?;
                        engine
                            .quantize_activations_tensor(&t)?
                            .read_activations()
                            .map(drop)
                    })?,
                ),
            };
            cpu[i] = (units, tc);
            gpu_t[i] = (sample(class, (rows, 1, k)), tg);
        }
        c.cpu[class.index()] = Cost::fit(cpu[0], cpu[1]);
        c.gpu[class.index()] = fit_gpu(gpu_t, up_bw, down_bw);
    }
    for (class, sizes) in LINEAR_SIZES {
        before(class);
        let mut cpu = [(0.0, 0.0); 2];
        let mut gpu_t = [(sample(class, (0, 0, 0)), 0.0); 2];
        for (i, &(m, n, k)) in sizes.iter().enumerate() {
            let w =
                cpu_work(|| bitnet_cpu_ref::quantize_weights(&values(n * k, i as u32 + 3), n, k))?;
            let x = values(m * k, i as u32 + 5);
            let units = (m * n * k) as f64;
            let tc = time(3, || {
                cpu_work(|| bitnet_cpu_ref::bitlinear(&x, m, &w))
                    .map(drop)
                    .map_err(Error::from)
            })?;
            let wt = engine.upload_ternary(&w)?;
            let tg = time(3, || {
                let xt = engine.upload_f32(&x, &[m, k])?;
                engine.bitlinear_tensor(&xt, &wt)?.read_f32().map(drop)
            })?;
            cpu[i] = (units, tc);
            gpu_t[i] = (sample(class, (m, n, k)), tg);
        }
        c.cpu[class.index()] = Cost::fit(cpu[0], cpu[1]);
        c.gpu[class.index()] = fit_gpu(gpu_t, up_bw, down_bw);
    }
    // Once the device is lost, new tensors are host tensors and the ops take their CPU paths:
    // "GPU" runs after a loss timed cpu-ref, and such a model must be neither installed nor
    // cached. A loss is permanent, so a device healthy now was healthy for every GPU run.
    gpu.check_health()?;
    log::info!(
        "bitnet-wgpu: calibrated in {:.2} s: {}",
        started.elapsed().as_secs_f64(),
        c.to_text().replace('\n', "; ")
    );
    if let Some(q) = quiet {
        q.stop()?;
    }
    Ok(c)
}
