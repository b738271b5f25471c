//! `bitnet-bench`: the headless benchmark of bitnet-wgpu, as a library so that the binary, the
//! criterion benches and the tests share one implementation.
//!
//! * [`workload`]: the ops, BitNet shapes and the decode layer stack, with their byte/op counts.
//! * [`selection`]: what a run measures (filters, sides); nothing at all is a usage error.
//! * [`measure`]: samples → median; [`progress`]: the stderr progress bar.
//! * [`gpu`]: per-op cases through the engine ([`timing`]: the one GPU timing loop);
//!   [`gpu_stack`]: the decode layer stack.
//! * [`roofline`]: the copy-kernel bandwidth roofline;
//!   [`clock_keeper`]: the GPU kept at its working clocks between timed batches.
//! * [`stream`], [`batch`], [`overhead`]: issue 4's streaming, batched-decode and CPU-path
//!   overhead measurements.
//! * [`attention`], [`attention_measure`]: attention and KV append, decode and prefill.
//! * [`pool`]: buffer-pool peak / live tensor bytes per case and section.
//! * [`report`]: the result model written by `--json`; [`peers`]: the PyTorch peers' JSON.
//! * [`table`], [`svg`], [`results_md`] (with [`targets`]): the human-readable outputs.
#![warn(missing_docs)]

pub mod attention;
pub mod attention_measure;
pub mod batch;
pub mod cli;
pub mod clock_keeper;
pub mod cpu;
pub mod data;
pub mod date;
pub mod dispatch_floor;
pub mod engine_ops;
pub mod error;
pub mod fmt;
pub mod gpu;
pub mod gpu_stack;
pub mod measure;
pub mod overhead;
pub mod pass_timer;
pub mod peers;
pub mod pool;
pub mod progress;
pub mod report;
pub mod results_md;
pub mod roofline;
pub mod run;
pub mod selection;
pub mod steps;
pub mod stream;
pub mod svg;
pub mod table;
pub mod targets;
pub mod timing;
pub mod workload;

pub use error::{BenchError, Result};
