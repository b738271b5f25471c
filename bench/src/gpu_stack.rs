//! The decode stack on the GPU ([`GpuBench::time_stack`]): 210 resident weight matrices of a
//! 30-layer BitNet-2B4T, one submission per token, in the independent and chained data flows and
//! as one `LinearChain` dispatch.

use crate::data;
use crate::engine_ops as ops;
use crate::gpu::GpuBench;
use crate::measure::{Measurement, RepeatPolicy};
use crate::timing::time_calls;
use crate::workload::{LAYER_2B4T_READS, LinearInput, StackSpec, stack_weight_scale};
use bitnet_wgpu::{ChainInput, Linear, Tensor};

/// The stack's figures: GPU span (timestamps) and one-submission wall time, for the independent
/// and the chained data flow (see [`GpuBench::time_stack`]).
pub struct StackTimes {
    /// GPU span of the one-submission batch from the profiler (None without timestamps).
    pub kernels: Option<Measurement>,
    /// Submit + wait wall time of the whole stack as one submission, profiler off (recording the
    /// 210 BitLinears on the host is not included).
    pub wall: Measurement,
    /// `kernels` of the chained stack.
    pub chained_kernels: Option<Measurement>,
    /// `wall` of the chained stack.
    pub chained_wall: Measurement,
    /// `kernels` of the chained stack as one [`bitnet_wgpu::LinearChain`] run (one dispatch).
    pub chain_kernels: Option<Measurement>,
    /// `wall` of the chained stack as one `LinearChain` run.
    pub chain_wall: Measurement,
    /// [`CHAIN_RUNS`] `LinearChain` runs (fewer where a sample would be slow) back to back in one
    /// submission, profiler off: wall time ÷ runs (each run waits for the one before, as decode
    /// steps do; the profiled span of the chain's in-dispatch waits is unreliable, its wall time
    /// is not).
    pub chain_back_to_back: Measurement,
    /// Whether the `LinearChain` runs used the one-dispatch chain kernel.
    pub chain_fused: bool,
}

/// `LinearChain` runs per sample of [`StackTimes::chain_back_to_back`].
pub const CHAIN_RUNS: usize = 16;

impl GpuBench {
    /// Times the decode stack: every distinct weight matrix resident, all BitLinears recorded into
    /// one submission per repeat, in two data flows: independent (every linear reads the layer
    /// input, the stack) and chained (a real decode's dependencies, `LAYER_2B4T_READS`).
    /// Outputs live until the step ends, as a model keeps them (KV cache, residuals): a buffer
    /// reused within the step would add a write-after-write barrier no real decode has.
    pub fn time_stack(&self, spec: StackSpec, policy: RepeatPolicy) -> Result<StackTimes, String> {
        let e = self.engine();
        let err = |x: bitnet_wgpu::Error| x.to_string();
        let mut weights: Vec<Tensor> = Vec::new();
        let mut links = Vec::new();
        for (i, &(n, k)) in spec.matrices().iter().enumerate() {
            let w = data::ternary_scaled(n, k, 1000 + i as u64, stack_weight_scale(k))
                .map_err(|x| x.to_string())?;
            weights.push(e.upload_ternary(&w).map_err(err)?);
            let layer_first = i - i % LAYER_2B4T_READS.len();
            let input = match LAYER_2B4T_READS[i % LAYER_2B4T_READS.len()] {
                LinearInput::LayerInput if layer_first == 0 => ChainInput::Input,
                LinearInput::LayerInput => ChainInput::Output(layer_first - 1),
                LinearInput::Output(j) => ChainInput::Output(layer_first + j),
            };
            links.push((Linear::new(e, w), input));
        }
        // The chained flow as one LinearChain (M = 1 only: a chain runs one vector).
        let chain = (spec.m == 1)
            .then(|| e.linear_chain(2560, links))
            .transpose()
            .map_err(err)?;
        let x_hidden = e
            .upload_f32(&data::floats(spec.m * 2560, 2560), &[spec.m, 2560])
            .map_err(err)?;
        let x_ffn = e
            .upload_f32(&data::floats(spec.m * 6912, 6912), &[spec.m, 6912])
            .map_err(err)?;
        let independent = |_: usize| -> Result<(), String> {
            let mut outs = Vec::with_capacity(weights.len());
            for w in &weights {
                let x = if w.shape()[1] == 6912 {
                    &x_ffn
                } else {
                    &x_hidden
                };
                outs.push(ops::bitlinear(e, x, w)?);
            }
            Ok(())
        };
        let chained = |_: usize| -> Result<(), String> {
            let mut x = x_hidden.clone();
            let mut outs: Vec<Tensor> = Vec::with_capacity(weights.len());
            for layer in weights.chunks(LAYER_2B4T_READS.len()) {
                let first = outs.len();
                for (w, reads) in layer.iter().zip(LAYER_2B4T_READS) {
                    let y = match reads {
                        LinearInput::LayerInput => ops::bitlinear(e, &x, w)?,
                        LinearInput::Output(j) => ops::bitlinear(e, &outs[first + j], w)?,
                    };
                    outs.push(y);
                }
                x = outs.last().cloned().ok_or("empty layer")?;
            }
            Ok(())
        };
        let one_dispatch = |_: usize| -> Result<(), String> {
            match &chain {
                Some(c) => c.forward_tensor(&x_hidden).map(drop).map_err(err),
                None => Err("the one-dispatch chain runs M = 1 only".into()),
            }
        };
        let span = |f: &dyn Fn(usize) -> Result<(), String>| {
            self.timestamps()
                .then(|| self.time(policy, 1, f))
                .transpose()
        };
        let kernels = span(&independent)?;
        let chained_kernels = span(&chained)?;
        let chain_kernels = span(&one_dispatch)?;
        // One-submission wall time with the profiler off (no per-dispatch passes or read-backs).
        if self.timestamps() {
            e.set_profiling(false).map_err(err)?;
        }
        let wall = self.time_wall(policy, independent);
        let chained_wall = self.time_wall(policy, chained);
        let chain_wall = self.time_wall(policy, one_dispatch);
        let chain_back_to_back = time_calls(e, false, policy, CHAIN_RUNS, one_dispatch);
        if self.timestamps() {
            e.set_profiling(true).map_err(err)?;
        }
        Ok(StackTimes {
            kernels,
            wall: wall?,
            chained_kernels,
            chained_wall: chained_wall?,
            chain_kernels,
            chain_wall: chain_wall?,
            chain_back_to_back: chain_back_to_back?,
            chain_fused: chain.is_some_and(|c| c.is_fused()),
        })
    }
}
