//! Edge cases of the register-resident WGSL kernels against cpu-ref, through the public API:
//! - `act_quant.wgsl` (K % 4 != 0) and `act_quant_vec4.wgsl` (K % 4 == 0), on both sides of
//!   the register limit (rows of up to 16384 values are quantized from registers, longer rows
//!   take the fallback loops): NaN / +Inf / -Inf at late indices (the last element, the last
//!   register slot of a thread, the first value past the register limit) give cpu-ref's error
//!   (same op, tensor and flat index, also in row 2 of 3 rows); finite rows give bit-identical
//!   values and scales.
//! - `bitlinear_gemv_batch_subgroup.wgsl` (the default plan for M = 2..8 f32 rows, K % 64 == 0)
//!   with x in one K tile and in several: non-finite values in later rows / K positions give
//!   cpu-ref's error, finite rows bit-identical outputs.
//! - `exact_div_127.wgsl`: bit-identical to `exact_div(127.0, a)` (`exact_div.wgsl`) on the GPU,
//!   through a small compute kernel built from the two snippet files: every significand at the
//!   fast path's edge exponents (6, 254), at 1 <= a < 2 and in the fallback (exponents 0, 5,
//!   255: subnormals, tiny a, infinity and NaNs), every 13th significand at every exponent, edge
//!   and random significands at every exponent with both signs, 1e-5 (the activation floor),
//!   zeros and random bit patterns (for positive non-NaN `a` also equal to the host's IEEE
//!   `127.0 / a`); and, with the f32 estimate or the float correction step perturbed, the
//!   integer correction steps that IEEE division (lavapipe) never needs.
//! - `exact_sqrt.wgsl`: `sqrt_rounded` equal to the host's IEEE square root on the GPU over edge
//!   and random significands at every exponent, subnormals and perfect squares, also with the
//!   shader's root moved up to 4 ulp (the correction steps an IEEE `sqrt` never needs). Both run on
//!   a bare device of the engine's adapter (`kernel_edges/rig.rs`).

#[path = "kernel_edges/act_quant.rs"]
mod act_quant;
#[path = "kernel_edges/batch_gemv.rs"]
mod batch_gemv;
#[path = "kernel_edges/exact_div.rs"]
mod exact_div;
#[path = "kernel_edges/exact_sqrt.rs"]
mod exact_sqrt;
#[path = "kernel_edges/rig.rs"]
mod rig;

use std::sync::OnceLock;

use bitnet_tests::{Rng, block_on, gpu_engine, random_normal};
use bitnet_wgpu::cpu_ref::{self, QuantizedActivations, TernaryMatrix};
use bitnet_wgpu::{BitnetTuning, Engine, Error, LinearPlan, wgpu};

const BADS: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// The error of a call that must fail, else a panic (without printing the result).
fn err_of<T>(r: Result<T, Error>, who: &str, ctx: &str) -> Error {
    match r {
        Err(e) => e,
        Ok(_) => panic!("{ctx}: {who} gave a result, not an error"),
    }
}

/// The engine in `cell`, made once with `tuning` and autotune off (the untuned plans on every
/// adapter).
fn tuned(cell: &'static OnceLock<Engine>, tuning: BitnetTuning) -> &'static Engine {
    cell.get_or_init(|| {
        let e = gpu_engine();
        e.set_bitnet_tuning(BitnetTuning {
            autotune: Some(false),
            ..tuning
        });
        e
    })
}

/// The default GPU engine, autotune off (the untuned default plans on every adapter).
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    tuned(&E, BitnetTuning::default())
}

fn has_subgroups() -> bool {
    engine().info().features.contains(wgpu::Features::SUBGROUP)
}
