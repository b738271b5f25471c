//! Autotune's measuring (see `bitnet_tune.rs`): every candidate plan recorded on the real shape
//! against rotating scratch weights, timed per call, the fastest kept.

use bitnet_cpu_ref::layout::words_per_row;
use bitnet_kernels_wgsl::bitnet::GEMV_MAX_M;

use super::{Key, with_state};
use crate::chunk::check_buffer;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ops::bitnet::check_k;
use crate::ops::bitnet_choose::heuristic_with;
use crate::ops::bitnet_plan::LinearPlan;
use crate::ops::bitnet_record::LinearCall;
use crate::ops::bitnet_tune_clock::{TuneProfiler, time_each};
use crate::tensor::DType;

/// Scratch bytes of weight copies for autotune timing.
const SCRATCH_BYTES: u64 = 96 << 20;

impl Engine {
    /// Times every plan of `list` on `key`'s shape and returns the fastest.
    pub(super) fn measure_best(
        &self,
        gpu: &Gpu,
        key: Key,
        list: &[LinearPlan],
    ) -> Result<LinearPlan> {
        let settings = with_state(gpu.id, |s| s.settings);
        let fallback = heuristic_with(gpu, key, settings);
        if list.len() <= 1 {
            return Ok(list.first().copied().unwrap_or(fallback));
        }
        let Key { m, n, k, f32_input } = key;
        // GEMMs on the GPU clock (bitnet_tune_clock.rs); the user's profiler is set aside
        // either way, from the first tuning dispatch to the last.
        let profiler = TuneProfiler::start(gpu, m as u64 > u64::from(GEMV_MAX_M))?;
        let best = self.measure_each(gpu, key, list, profiler.as_ref());
        if let Some(p) = profiler {
            p.stop()?;
        }
        let best = best?;
        log::info!(
            "bitnet autotune [{m}, {n}, {k}] f32 {f32_input}: {} ({:.2} µs per call)",
            best.1,
            best.0 * 1e6
        );
        Ok(best.1)
    }

    /// Times every plan of `list` (at least two) on `key`'s shape: the fastest and its time.
    fn measure_each(
        &self,
        gpu: &Gpu,
        key: Key,
        list: &[LinearPlan],
        profiler: Option<&TuneProfiler>,
    ) -> Result<(f64, LinearPlan)> {
        const OP: &str = "bitlinear autotune";
        let Key { m, n, k, f32_input } = key;
        let x = self.upload_on(gpu, OP, &tuning_row(m * k), &[m, k], DType::F32)?;
        let xq = self.quantize_activations_as(OP, &x)?;
        let out = self.empty(gpu, OP, &[m, n], DType::F32)?;
        // Weight copies, each starting at an aligned offset.
        let align = u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment).max(4);
        let row_bytes = 4 * words_per_row(k) as u64;
        let stride = (n as u64 * row_bytes).div_ceil(align) * align;
        let copies = (SCRATCH_BYTES / stride)
            .clamp(1, 64)
            .min(gpu.caps.max_buffer / stride)
            .max(1);
        let scratch = self.empty(
            gpu,
            OP,
            &[(copies * stride).div_ceil(row_bytes) as usize, k],
            DType::Ternary,
        )?;
        let record = |p: usize, i: u64| -> Result<()> {
            let plan = list[p];
            let quantized;
            let xin = match (plan, f32_input) {
                (p, _) if p.takes_f32() => &x,
                (_, true) => {
                    quantized = self.quantize_activations_as(OP, &x)?;
                    &quantized
                }
                (_, false) => &xq,
            };
            LinearCall {
                op: OP,
                plan,
                x: xin,
                w: &scratch,
                w_base: (i % copies) * stride,
                out: &out,
                shape: (m, n, k),
                acc: false,
                check: false,
            }
            .record(gpu)
        };
        let times = time_each(self, profiler, list.len(), record)?;
        let mut best = (f64::INFINITY, list[0]);
        for (&plan, &secs) in list.iter().zip(&times) {
            log::debug!(
                "bitnet autotune [{m}, {n}, {k}] f32 {f32_input}: {plan}: {:.2} µs",
                secs * 1e6
            );
            if secs < best.0 {
                best = (secs, plan);
            }
        }
        Ok(best)
    }
}

/// Rejects a shape autotuning cannot measure, before anything is allocated for it: a zero
/// dimension, a K past exact i32 accumulation, or f32 activations, packed weights or outputs
/// beyond the device's largest buffer (the measurement makes all three; its host copy of the
/// activations would otherwise be allocated, unchecked, first).
pub(super) fn check_tune_shape(gpu: &Gpu, m: usize, n: usize, k: usize) -> Result<()> {
    const OP: &str = "autotune_bitlinear";
    if m == 0 || n == 0 || k == 0 {
        return Err(Error::CpuRef(bitnet_cpu_ref::Error::InvalidArgument {
            op: OP,
            what: "m, n, k",
            reason: "every dimension must be at least 1",
        }));
    }
    check_k(OP, k)?;
    let sizes = [
        ("activations", DType::F32.data_bytes(&[m, k])),
        ("weights", DType::U32.data_bytes(&[n, words_per_row(k)])),
        ("outputs", DType::F32.data_bytes(&[m, n])),
    ];
    for (what, bytes) in sizes {
        check_buffer(gpu, &format!("{OP} {what}"), bytes.unwrap_or(u64::MAX))?;
    }
    Ok(())
}

/// Values of the tuning activations (finite, varied; their results are never read).
fn tuning_row(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02)
        .collect()
}
