//! The device self-test that admits the cooperative-matrix GEMMs (f16, and int8 on Vulkan).
//!
//! Cooperative matrices are an experimental wgpu feature, and a driver may accept a shader and
//! still compute something else (a `coop_mat8x8<f32>` shader silently wrote zeros on the H100; see
//! the team's GPU notes), and wgpu cannot even say whether a driver has the int8 matrices of the
//! SPIR-V kernel (`spirv.rs`). So before the tuner may pick a [`LinearPlan::Coop`] on an engine,
//! it runs each coop GEMM and the dot4 GEMM once on fixed problems that exercise every edge of the coop kernel (M, N and K not
//! tile multiples, more than one tile in M and N, an odd number of weight words, K padding, the
//! full int8 range) and compares the exact accumulators word for word. The verdict is kept for the engine's lifetime; any error
//! (pipeline creation, device) counts as a failure and is logged, never returned.

use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};

use super::bitnet_plan::{CoopKind, LinearPlan, coop_kind_ok};
use super::bitnet_record::LinearCall;
use super::bitnet_tune::CoopVerdict;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::tensor::DType;

/// Self-test shapes (M, N, K): one partial 128 x 128 tile with 63 weight words (an odd count and
/// padded codes); then 2 x 3 tiles, all partial at the far edges, with 35 words (an odd count of
/// 16-k halves in the last 32-k step, padded codes).
const SHAPES: [(usize, usize, usize); 2] = [(72, 200, 1000), (200, 300, 552)];

impl Engine {
    /// Which cooperative-matrix GEMMs give the dot4 GEMM's exact accumulators on this device
    /// (none where they cannot run at all).
    pub(crate) fn coop_self_test(&self, gpu: &Gpu) -> CoopVerdict {
        CoopVerdict(CoopKind::ALL.map(|kind| {
            SHAPES
                .iter()
                .all(|&(m, _, k)| coop_kind_ok(gpu, kind, m, k))
                && self.coop_passes(gpu, kind)
        }))
    }

    /// Whether coop GEMM `kind` matches on every self-test shape; failures are logged.
    fn coop_passes(&self, gpu: &Gpu, kind: CoopKind) -> bool {
        match SHAPES.iter().try_fold(true, |same, &shape| {
            Ok::<_, crate::error::Error>(same && self.coop_compare(gpu, shape, kind)?)
        }) {
            Ok(same) => {
                if !same {
                    log::warn!("bitnet-wgpu: the {kind} failed its self-test");
                }
                same
            }
            Err(e) => {
                log::warn!("bitnet-wgpu: {kind} unavailable: {e}");
                false
            }
        }
    }

    fn coop_compare(
        &self,
        gpu: &Gpu,
        shape: (usize, usize, usize),
        kind: CoopKind,
    ) -> Result<bool> {
        const OP: &str = "bitlinear coop self-test";
        let (m, n, k) = shape;
        // Deterministic data over the full int8 range and all three weights.
        let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ (m * n * k) as u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let x: Vec<i8> = (0..m * k).map(|_| next() as u8 as i8).collect();
        let w: Vec<i8> = (0..n * k).map(|_| (next() % 3) as i8 - 1).collect();
        let xq = QuantizedActivations::from_parts(x, vec![1.0; m], m, k)?;
        let wq = TernaryMatrix::from_i8(&w, n, k, 1.0)?;
        let xq = self.upload_activations_on(gpu, &xq)?;
        let wq = self.upload_ternary_on(gpu, &wq)?;
        let mut results = Vec::new();
        for plan in [
            LinearPlan::Gemm { t: 4, splits: 1 },
            LinearPlan::Coop { splits: 1, kind },
        ] {
            let out = self.empty(gpu, OP, &[m, n], DType::U32)?;
            LinearCall {
                op: OP,
                plan,
                x: &xq,
                w: &wq,
                w_base: 0,
                out: &out,
                shape,
                acc: true,
                check: false,
            }
            .record(gpu)?;
            results.push(out.read_u32()?);
        }
        Ok(results[0] == results[1])
    }
}
