//! Ops, one file per family. Each op validates its input (typed errors), then runs on the GPU
//! through [`crate::launch::Launch`] or on the CPU through `bitnet-cpu-ref`.
//!
//! Families (owners in docs/ARCHITECTURE.md): `util` (fill, checked copy — infrastructure),
//! `bitnet` / `bitnet_linear` (BitNet ops on resident tensors), `bitnet_stable` (the
//! cpu-ref-compatible BitNet entry points, GPU-backed), and the kernel families, which their
//! authors add here with one `mod` line each: `bitnet`, `matmul`, `elementwise`, `reduce`, `norm`,
//! `rope`, `softmax`, `attention`, the fused `norm_add` and `gated`, `shape` (slice and concat, on the strided word copy of
//! `blocks`).

mod attention;
mod attention_decode;
mod attention_plan;
mod attention_tiled;
mod bitnet;
pub(crate) mod bitnet_chain;
mod bitnet_choose;
mod bitnet_coop;
pub(crate) mod bitnet_gated;
pub(crate) mod bitnet_group;
mod bitnet_linear;
mod bitnet_loops;
mod bitnet_normed;
mod bitnet_plan;
pub(crate) mod bitnet_record;
mod bitnet_split;
pub(crate) mod bitnet_stable;
mod bitnet_tune;
mod bitnet_tune_cache;
mod bitnet_tune_clock;
mod bitnet_weight_quant;
pub(crate) mod blocks;
pub(crate) mod blocks_pair;
mod broadcast;
mod elementwise;
mod float_args;
mod gated;
mod in_dispatch_wait;
mod matmul;
mod measure_gate;
mod norm;
mod norm_add;
mod reduce;
mod rope;
mod rope_append;
mod shape;
mod softmax;
mod util;

pub use bitnet_plan::{CoopKind, LinearPlan};
pub(crate) use bitnet_tune::calibration_tag;
pub(crate) use bitnet_tune::forget as forget_tuning;
pub use bitnet_tune::{AUTOTUNE_ENV, AUTOTUNE_MIN_BYTES, BitnetTuning};
pub use bitnet_tune_cache::TUNE_CACHE_ENV;
pub(crate) use bitnet_tune_clock::TuneProfiler;
pub(crate) use float_args::{host_f32, loops_fit};
pub(crate) use in_dispatch_wait::waits_allowed;
pub(crate) use measure_gate::MeasureGate;
pub(crate) use rope::RopeTables;
pub(crate) use rope_append::CacheRows;
