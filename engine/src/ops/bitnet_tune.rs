//! BitLinear tuning: the plan each shape runs with, per engine — forced by [`BitnetTuning`],
//! measured on the device (autotune), or the heuristic of `bitnet_plan.rs` — cached in memory
//! for the engine's lifetime.
//!
//! Autotune records every candidate plan on the real shape, with weights rotating through
//! scratch copies (about 96 MiB, more than a large GPU's L2) so that weights come from memory as
//! they do in a real model, and keeps the plan with the lowest time per call (best of three timed
//! batches, taken round-robin over the plans so that GPU clocks changing meanwhile reach them
//! all, `bitnet_tune_measure.rs`; GPU time for GEMMs where the device has timestamps, else wall
//! time: `bitnet_tune_clock.rs`). It runs on the first BitLinear of a shape whose packed weights
//! are at least [`AUTOTUNE_MIN_BYTES`], by default on discrete GPUs and for GEMMs (M > 8) only —
//! GEMVs keep the heuristic plans unless tuning is asked for explicitly (`BITNET_AUTOTUNE=1` or
//! [`BitnetTuning::autotune`] = `Some(true)`; `0` / `Some(false)` turns it off) — and is one sync point: pending work is submitted, and an
//! error it reports is returned by the BitLinear call that triggered the tuning. GEMMs are
//! measured once per bucket of M (the next power of two: 9-16, 17-32, ..., `tuning_bucket`), so
//! prompts of every length cost a handful of measurements, not one each. Measured plans
//! are also kept in a cache file (`bitnet_tune_cache.rs`) and reused by later processes on the
//! same adapter, driver and kernels.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use bitnet_cpu_ref::layout::words_per_row;
use bitnet_kernels_wgsl::bitnet::GEMV_MAX_M;

use super::bitnet_choose::{candidates, forced_plan, heuristic_fitting, overlapping};
use super::bitnet_plan::{CoopKind, LinearPlan, coop_ok};
use super::bitnet_tune_cache as disk;
use super::bitnet_tune_clock::TuneProfiler;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;

/// Smallest packed weight matrix (bytes) that is autotuned automatically. 256 KiB takes in
/// BitNet-2B4T's k/v projection (640 × 2560, 400 KiB): on the H200 its untuned plan (32 rows per
/// workgroup, 20 workgroups for 132 SMs) took twice as long as the tuned 2560 × 2560.
pub const AUTOTUNE_MIN_BYTES: u64 = 256 << 10;
/// Environment variable that turns automatic tuning on (`1`) or off (`0`) for every engine.
pub const AUTOTUNE_ENV: &str = "BITNET_AUTOTUNE";

/// How the BitNet ops of one engine choose their kernels. `Default` = heuristic, autotune on
/// discrete GPUs, nothing forced. Forced values apply where the kernel can run the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BitnetTuning {
    /// Measure the candidates of each large shape on first use (`None`: `BITNET_AUTOTUNE`, else
    /// on for discrete GPUs only).
    pub autotune: Option<bool>,
    /// Force the threads per 4-row block of the vec4 GEMVs (8, 16, 32, 64, 128 or 256; the fused
    /// GEMV also takes 4).
    pub gemv_lanes: Option<u32>,
    /// Force (`true`) or forbid (`false`) the fused activation-quant + GEMV kernels: for M = 1
    /// the decode GEMV, for M = 2..8 (and M = 1 past the decode GEMV's K limit) the batched GEMV
    /// (`false` forbids both).
    pub fuse_decode: Option<bool>,
    /// Force (`true`) the fused batched GEMV for every f32 M ≤ 8 where it can run (M = 1
    /// included), or forbid it (`false`); `None`: the default for M = 2..8 and an autotune
    /// candidate for M ≤ 8.
    pub batch_gemv: Option<bool>,
    /// Use the staged GEMV (activation rows copied to workgroup memory) instead of the vec4 GEMV
    /// (`true`), or never (`false`); `None`: the vec4 GEMV by default, both autotune candidates.
    pub staged_gemv: Option<bool>,
    /// Force (`true`) the lean batched GEMV for every f32 M ≤ 8 where it can run, or forbid it
    /// (`false`); `None`: an autotune candidate.
    pub lean_gemv: Option<bool>,
    /// Use the lean GEMV on quantized rows (barrier-free epilogue) instead of the vec4 GEMV
    /// (`true`), or never (`false`); `None`: an autotune candidate.
    pub lean_q_gemv: Option<bool>,
    /// Force the GEMM outputs per thread and dimension (4 or 8).
    pub gemm_block: Option<u32>,
    /// Force the K slices of the GEMMs for M > 8 (1, 2, 4 or 8; 1 = no split) where the scratch
    /// fits (`None`: 1 by default, every count an autotune candidate).
    pub gemm_splits: Option<u32>,
    /// Force (`true`) or forbid (`false`) the cooperative-matrix GEMM for M > 8 where the device
    /// can run it (`None`: a candidate of autotune once it passed its device self-test).
    /// Forbidding it forbids the int8 one too.
    pub gemm_coop: Option<bool>,
    /// Which cooperative-matrix GEMM: the only autotune candidate among them, and the one
    /// `gemm_coop: Some(true)` forces (without its self-test: for checking it against cpu-ref)
    /// where the device can run it. `None`: every kind that passed its self-test is a
    /// candidate, and forcing uses [`CoopKind::F16`].
    pub gemm_coop_kernel: Option<CoopKind>,
    /// Use the generic GEMV for M ≤ 8 (no vec4 / fused kernels): the fallback path.
    pub generic_gemv: bool,
}

/// A BitLinear shape as the tuner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub f32_input: bool,
}

#[derive(Default)]
struct EngineTuning {
    settings: BitnetTuning,
    /// Counts [`Engine::set_bitnet_tuning`] calls: a plan chosen (or measured, which takes
    /// seconds) under settings that were replaced meanwhile is not cached.
    generation: u64,
    plans: HashMap<Key, LinearPlan>,
    /// Measured plans from the plan cache file (read on first need, `bitnet_tune_cache.rs`).
    persisted: Option<HashMap<Key, LinearPlan>>,
    /// The cooperative-matrix GEMMs' self-test verdicts (`bitnet_coop.rs`), once run.
    coop: Option<CoopVerdict>,
}

/// Which cooperative-matrix GEMMs passed their device self-tests (`bitnet_coop.rs`), by
/// [`CoopKind::ALL`] position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CoopVerdict(pub [bool; 3]);

impl CoopVerdict {
    /// Whether `kind` passed.
    pub fn passed(self, kind: CoopKind) -> bool {
        CoopKind::ALL
            .iter()
            .position(|&k| k == kind)
            .is_some_and(|i| self.0[i])
    }
}

impl Key {
    fn shape(self) -> disk::Shape {
        (self.m, self.n, self.k, self.f32_input)
    }
}

/// Tuning state of every GPU engine, by engine id.
fn state() -> &'static Mutex<HashMap<u64, EngineTuning>> {
    static STATE: OnceLock<Mutex<HashMap<u64, EngineTuning>>> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

/// Caches `plan` for `key` when the settings it was chosen under (`generation`) are still the
/// engine's. Otherwise [`Engine::set_bitnet_tuning`] ran meanwhile and cleared the plans: the
/// call that chose `plan` (it started under the old settings) runs it, and the next call of the
/// shape plans under the new ones. Cached anyway, a forced or forbidden setting (a block size,
/// `gemm_coop: Some(false)`) set during a seconds-long autotune was ignored for good (a
/// reviewer's probe).
fn cache_plan(gpu: &Gpu, generation: u64, key: Key, plan: LinearPlan) {
    with_state(gpu.id, |s| {
        if s.generation == generation {
            s.plans.insert(key, plan);
        }
    });
}

/// Drops the tuning state of engine `id` (its GPU context is going away; ids are never reused).
pub(crate) fn forget(id: u64) {
    state()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

fn with_state<R>(id: u64, f: impl FnOnce(&mut EngineTuning) -> R) -> R {
    let mut map = state().lock().unwrap_or_else(|p| p.into_inner());
    f(map.entry(id).or_default())
}

impl Engine {
    /// Sets how this engine's BitNet ops choose kernels, and forgets every in-memory choice (the
    /// plan cache file is kept: it is only consulted for shapes autotune would measure).
    pub fn set_bitnet_tuning(&self, tuning: BitnetTuning) {
        if let Some(id) = self.gpu_id() {
            with_state(id, |s| {
                s.settings = tuning;
                s.generation += 1;
                s.plans.clear();
            });
        }
    }

    /// The tuning settings of this engine.
    pub fn bitnet_tuning(&self) -> BitnetTuning {
        self.gpu_id()
            .map_or_else(BitnetTuning::default, |id| with_state(id, |s| s.settings))
    }

    /// The plan cached for a BitLinear shape (`f32_input`: activations given as f32), if that
    /// shape has run (or been tuned) on this engine.
    pub fn bitlinear_plan(
        &self,
        m: usize,
        n: usize,
        k: usize,
        f32_input: bool,
    ) -> Option<LinearPlan> {
        let id = self.gpu_id()?;
        with_state(id, |s| s.plans.get(&Key { m, n, k, f32_input }).copied())
    }

    /// Measures every candidate plan of a BitLinear shape on this device now (one sync point),
    /// caches the fastest and returns it. On the CPU engine: `Ok(None)`. A zero dimension is
    /// `InvalidArgument`, K ≥ 2^24 `SizeOverflow`, and activations, weights or outputs beyond
    /// the device's largest buffer `LimitExceeded`, before anything is allocated.
    pub fn autotune_bitlinear(
        &self,
        m: usize,
        n: usize,
        k: usize,
        f32_input: bool,
    ) -> Result<Option<LinearPlan>> {
        let Some(gpu) = self.gpu_context() else {
            return Ok(None);
        };
        measure::check_tune_shape(gpu, m, n, k)?;
        let key = Key { m, n, k, f32_input };
        let (settings, generation) = with_state(gpu.id, |s| (s.settings, s.generation));
        let coop = self.coop_verified(gpu, key, settings);
        let plan = self.measure_best(gpu, key, &candidates(gpu, key, settings, coop))?;
        cache_plan(gpu, generation, key, plan);
        persist(gpu, key, settings, plan);
        Ok(Some(plan))
    }

    /// [`Self::linear_plan`] for one call, `overlaps`: its dispatch will run alongside earlier
    /// ones (no barrier before it, `hazard.rs`). Then a heuristic fused decode GEMV takes the
    /// throughput variant ([`overlapping`]); forced lanes and explicit autotuning keep their plan.
    pub(crate) fn linear_plan_for(
        &self,
        gpu: &Gpu,
        shape: (usize, usize, usize),
        f32_input: bool,
        overlaps: bool,
    ) -> Result<LinearPlan> {
        let plan = self.linear_plan(gpu, shape, f32_input)?;
        let settings = with_state(gpu.id, |s| s.settings);
        let tuned = settings.autotune.or_else(autotune_env) == Some(true);
        Ok(if overlaps && !tuned && settings.gemv_lanes.is_none() {
            overlapping(plan)
        } else {
            plan
        })
    }

    /// The plan a BitLinear of this shape runs with (forced, cached, tuned now, or heuristic).
    pub(crate) fn linear_plan(
        &self,
        gpu: &Gpu,
        (m, n, k): (usize, usize, usize),
        f32_input: bool,
    ) -> Result<LinearPlan> {
        let key = Key { m, n, k, f32_input };
        let (settings, generation, cached) = with_state(gpu.id, |s| {
            (s.settings, s.generation, s.plans.get(&key).copied())
        });
        if let Some(plan) = cached {
            return Ok(plan);
        }
        let forced = forced_plan(gpu, settings, key);
        let explicit = settings.autotune.or_else(autotune_env);
        let auto = explicit.unwrap_or_else(|| autotune_default(gpu));
        let big = n as u64 * words_per_row(k) as u64 * 4 >= AUTOTUNE_MIN_BYTES;
        // Automatic tuning measures GEMMs (M > 8) only, unless asked for explicitly: GEMVs run
        // for a few µs, latency-bound, and the wall-clock ranking misjudged them on the H200 (its
        // M = 1 picks made the decode stack's GPU span 5.75 ms against 1.78 ms with the
        // heuristic plans), while the GEMM candidates differ by large, robust factors.
        let regime = explicit == Some(true) || m as u64 > u64::from(GEMV_MAX_M);
        let tunable = forced.is_none() && auto && big && regime;
        let coop = if tunable {
            self.coop_verified(gpu, key, settings)
        } else {
            CoopVerdict::default()
        };
        let list = candidates(gpu, key, settings, coop);
        let bucket = tuning_bucket(m);
        let plan = match forced {
            Some(plan) => plan,
            // Measured once per bucket of M: a server's prompts come in every length, and each
            // new length would otherwise be a measurement (a sync point) and a line of the plan
            // cache file. The bucket's plan serves if it is a candidate here too; a bucket that
            // cannot be measured (its buffers past a device limit) leaves the heuristic's.
            None if tunable && list.len() > 1 && bucket != m => {
                match self.linear_plan(gpu, (bucket, n, k), f32_input) {
                    Ok(shared) if list.contains(&shared) => shared,
                    _ => heuristic_fitting(gpu, key, settings, &list),
                }
            }
            None if tunable && list.len() > 1 => match persisted_plan(gpu, key, &list) {
                Some(plan) => plan,
                None => {
                    let plan = self.measure_best(gpu, key, &list)?;
                    persist(gpu, key, settings, plan);
                    plan
                }
            },
            None => heuristic_fitting(gpu, key, settings, &list),
        };
        cache_plan(gpu, generation, key, plan);
        Ok(plan)
    }

    /// Which cooperative-matrix GEMMs passed their self-tests (run now if they have not been),
    /// none where the device cannot run them or the settings forbid them.
    fn coop_verified(&self, gpu: &Gpu, key: Key, settings: BitnetTuning) -> CoopVerdict {
        if settings.gemm_coop == Some(false) || !coop_ok(gpu, key.m, 0) {
            return CoopVerdict::default();
        }
        if let Some(verdict) = with_state(gpu.id, |s| s.coop) {
            return verdict;
        }
        // Like the measurements, the self-test's dispatches stay out of the user's profile.
        let verdict = match TuneProfiler::start(gpu, false) {
            Ok(profiler) => {
                let verdict = self.coop_self_test(gpu);
                if let Some(Err(e)) = profiler.map(TuneProfiler::stop) {
                    log::warn!("bitnet-wgpu: coop self-test: {e}");
                }
                verdict
            }
            Err(e) => {
                log::warn!("bitnet-wgpu: cooperative-matrix GEMM unavailable: {e}");
                CoopVerdict::default()
            }
        };
        with_state(gpu.id, |s| s.coop = Some(verdict));
        verdict
    }
}

/// The M at which a tuned shape is measured: M itself up to the GEMV range
/// ([`GEMV_MAX_M`]), beyond it the next power of two (9-16 → 16, ..., 513-1024 → 1024).
fn tuning_bucket(m: usize) -> usize {
    if m as u64 <= u64::from(GEMV_MAX_M) {
        m
    } else {
        m.checked_next_power_of_two().unwrap_or(m)
    }
}

/// The plan cache file's choice for `key`, if it is one of today's candidates (`list`).
fn persisted_plan(gpu: &Gpu, key: Key, list: &[LinearPlan]) -> Option<LinearPlan> {
    let loaded = with_state(gpu.id, |s| s.persisted.is_some());
    if !loaded {
        // Read outside the lock; another thread may race us, both read the same file.
        let file: HashMap<Key, LinearPlan> = disk::load(gpu)
            .into_iter()
            .map(|((m, n, k, f32_input), p)| (Key { m, n, k, f32_input }, p))
            .collect();
        with_state(gpu.id, |s| s.persisted.get_or_insert(file).len());
    }
    let plan = with_state(gpu.id, |s| s.persisted.as_ref()?.get(&key).copied())?;
    list.contains(&plan).then_some(plan)
}

/// Writes a measured plan to the plan cache, unless `settings` narrowed the candidates (forced
/// lanes, blocks, splits or kernels): the cache serves every engine on this device, and a winner
/// among restricted candidates is not the default engines' winner.
fn persist(gpu: &Gpu, key: Key, settings: BitnetTuning, plan: LinearPlan) {
    if unrestricted(settings) {
        disk::store(gpu, key.shape(), plan);
    }
}

/// What of GPU context `id`'s tuning the calibration key names (empty for the default): a
/// calibration measures BitLinear through the engine's plans, so one measured under forced or
/// restricted plans (`generic_gemv` ran 7-14× slower) must not be served to default engines.
/// `BITNET_AUTOTUNE` changes the plans as `autotune` does, so a value of it is named too.
pub(crate) fn calibration_tag(id: u64) -> String {
    tag_of(with_state(id, |s| s.settings), autotune_env())
}

/// [`calibration_tag`] of `settings` and a `BITNET_AUTOTUNE` value.
fn tag_of(settings: BitnetTuning, autotune_env: Option<bool>) -> String {
    let mut tag = String::new();
    if settings != BitnetTuning::default() {
        tag += &format!(" | tuning {settings:?}");
    }
    if let Some(on) = autotune_env {
        tag += &format!(" | {AUTOTUNE_ENV} {}", if on { "on" } else { "off" });
    }
    tag
}

/// Whether `settings` leave every candidate in (only `autotune` set, if anything).
fn unrestricted(settings: BitnetTuning) -> bool {
    settings
        == BitnetTuning {
            autotune: settings.autotune,
            ..BitnetTuning::default()
        }
}

/// `BITNET_AUTOTUNE`: off (`0`, `false`, `off`, `no`) or on for every shape (`1`, `true`, `on`,
/// `yes`), any case, blanks ignored; unset or empty: no say. Anything else is logged and ignored
/// ([`crate::cache_file::switch`]).
fn autotune_env() -> Option<bool> {
    crate::cache_file::switch(AUTOTUNE_ENV, std::env::var(AUTOTUNE_ENV).ok().as_deref())
}

/// Autotune default without an explicit setting: discrete GPUs.
fn autotune_default(gpu: &Gpu) -> bool {
    gpu.adapter_info.device_type == wgpu::DeviceType::DiscreteGpu
}

#[path = "bitnet_tune_measure.rs"]
mod measure;

#[cfg(test)]
#[path = "bitnet_tune_tests.rs"]
mod tests;
