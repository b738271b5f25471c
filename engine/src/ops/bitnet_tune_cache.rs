//! The persistent half of BitLinear autotune: measured plans outlive the process, per adapter,
//! driver, crate version and BitLinear kernel sources, in one small text file, so a model's
//! shapes are measured once per machine instead of once per process.
//!
//! File: `$BITNET_TUNE_CACHE` if set (`off` / `0` / `false` / `no` disables it; `on` / `1` /
//! `true` / `yes` keep the default), else
//! `bitnet-wgpu/bitlinear-plans.txt` under `$XDG_CACHE_HOME` (`~/.cache` without it, or when it is relative) on Linux,
//! `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows. One line per measured shape:
//! `<device key> TAB <m> <n> <k> <f32 input 0|1> TAB <plan code>`; later lines win. It is read
//! once per engine (only when autotune is on for it) and appended to after every measurement
//! that changes a choice (compacted past 1000 lines); writers take turns through an advisory
//! lock on `bitlinear-plans.txt.lock` beside it, so that no engine's compaction drops another's
//! lines. Unreadable files and malformed lines are ignored (this device's malformed lines are
//! logged at `warn` when read), and a failed write is logged: it is a cache.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet_plan::{CoopKind, LinearPlan};
use crate::context::Gpu;

/// Environment variable: a file path for the plan cache, or `off` to disable it.
pub const TUNE_CACHE_ENV: &str = "BITNET_TUNE_CACHE";
const FILE_NAME: &str = "bitlinear-plans.txt";

/// A cached shape: `(M, N, K, f32 input)`.
pub(crate) type Shape = (usize, usize, usize, bool);

/// The device part of every line: adapter, backend, driver, crate version, kernel-source hash,
/// and the engine options that change kernel times (binding cap, params mode, full shader
/// checks): a plan measured under them is not the winner for engines without them.
pub(crate) fn device_key(gpu: &Gpu) -> String {
    let i = &gpu.adapter_info;
    let key = format!(
        "{} | {:?} | {} {} | bitnet-wgpu {} | kernels {:016x} | binding {} | {:?} params \
         | features {}{}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        env!("CARGO_PKG_VERSION"),
        kernel_hash(),
        gpu.caps.max_binding,
        gpu.caps.params_mode,
        gpu.caps.kernel_features_tag(),
        if crate::pipelines::full_shader_checks() {
            " | full shader checks"
        } else {
            ""
        },
    );
    // Tabs and newlines separate fields and lines.
    key.replace(['\t', '\n', '\r'], " ")
}

/// FNV-1a of the sources of every BitNet kernel (a superset of those a plan can pick, so that
/// no edited kernel — lean, split-sum, cooperative-matrix ones included — keeps its old choices).
fn kernel_hash() -> u64 {
    static HASH: OnceLock<u64> = OnceLock::new();
    *HASH.get_or_init(|| {
        kernels::ALL
            .iter()
            .flat_map(|k| k.source.bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
    })
}

/// The cache file, from the environment (see the module docs); `None` when disabled or unknown.
fn path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    resolve(
        crate::cache_file::location_var(TUNE_CACHE_ENV),
        var("XDG_CACHE_HOME"),
        var("HOME"),
        var("LOCALAPPDATA"),
    )
}

/// [`path`] as a pure function of the environment values.
fn resolve(
    setting: Option<Option<PathBuf>>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    local_app_data: Option<PathBuf>,
) -> Option<PathBuf> {
    if let Some(place) = setting {
        return place;
    }
    crate::cache_file::user_cache_dir_from(xdg, home, local_app_data).map(|d| d.join(FILE_NAME))
}

/// One line of the file.
fn format_line(key: &str, (m, n, k, f32_input): Shape, plan: LinearPlan) -> String {
    format!(
        "{key}\t{m} {n} {k} {}\t{}\n",
        u8::from(f32_input),
        plan.code()
    )
}

/// Parses one line; `None` if it is malformed or belongs to another device key.
fn parse_line(line: &str, key: &str) -> Option<(Shape, LinearPlan)> {
    let mut fields = line.split('\t');
    if fields.next()? != key {
        return None;
    }
    let dims: Vec<usize> = fields
        .next()?
        .split(' ')
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let plan = LinearPlan::from_code(fields.next()?.trim())?;
    match dims[..] {
        [m, n, k, f] if f <= 1 && fields.next().is_none() => Some(((m, n, k, f == 1), plan)),
        _ => None,
    }
}

/// Every plan cached for this device (later lines win).
pub(crate) fn load(gpu: &Gpu) -> HashMap<Shape, LinearPlan> {
    let Some(file) = path() else {
        return HashMap::new();
    };
    let Some(text) = crate::cache_file::read_lossy(&file) else {
        return HashMap::new();
    };
    let key = device_key(gpu);
    let mine = format!("{key}\t");
    let mut plans = HashMap::new();
    let mut malformed = 0usize;
    for line in crate::cache_file::complete_lines(&text) {
        match parse_line(line, &key) {
            Some((shape, plan)) => {
                plans.insert(shape, plan);
            }
            // Another device's lines are none of this engine's business; its own should parse.
            None if line.starts_with(&mine) => malformed += 1,
            None => {}
        }
    }
    if malformed > 0 {
        log::warn!(
            "bitnet-wgpu: {malformed} malformed line(s) for this device in the BitLinear plan \
             cache {}: ignored (those shapes are measured again)",
            file.display()
        );
    }
    plans
}

/// Records one measured plan: appended, unless the file already ends up with that choice; the
/// file is compacted (latest line per device and shape) once it passes [`MAX_LINES`].
pub(crate) fn store(gpu: &Gpu, shape: Shape, plan: LinearPlan) {
    let Some(path) = path() else {
        return;
    };
    if let Err(e) = store_at(&path, &device_key(gpu), shape, plan) {
        log::warn!(
            "bitnet-wgpu: cannot write the plan cache {}: {e}",
            path.display()
        );
    }
}

/// [`store`] into the file at `path`, for the device `key`.
fn store_at(
    path: &std::path::Path,
    key: &str,
    shape: Shape,
    plan: LinearPlan,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Every writer takes turns from the read to the write: a compacting rewrite would drop a line
    // appended between them.
    let _turn = crate::cache_file::lock_for_update(path);
    let old = crate::cache_file::read_lossy(path).unwrap_or_default();
    let last = crate::cache_file::complete_lines(&old)
        .filter_map(|l| parse_line(l, key))
        .filter(|(s, _)| *s == shape)
        .last();
    if last == Some((shape, plan)) {
        return Ok(());
    }
    let line = format_line(key, shape, plan);
    // Appended while every line is whole. A cut-off last line (another process, a crash, a full
    // disk) is dropped by a compacting rewrite instead: ending it with a newline would make it a
    // line, and a cut plan code can be another valid plan (`gemm:8x4` cut to `gemm:8`), served
    // unmeasured from then on.
    let whole = old.is_empty() || old.ends_with('\n');
    if whole && old.lines().count() < MAX_LINES {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        return f.write_all(line.as_bytes());
    }
    crate::cache_file::write_atomic(path, &(compact(&old) + &line))
}

/// Lines of the file before the cache is compacted.
const MAX_LINES: usize = 1000;

/// The latest line per (device key, shape) of a cache file, in first-seen order.
fn compact(text: &str) -> String {
    let mut latest: Vec<(&str, &str)> = Vec::new();
    for line in crate::cache_file::complete_lines(text) {
        let mut f = line.splitn(3, '\t');
        let (Some(key), Some(shape), Some(_)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let id = &line[..key.len() + 1 + shape.len()];
        match latest.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 = line,
            None => latest.push((id, line)),
        }
    }
    latest.iter().map(|(_, l)| format!("{l}\n")).collect()
}

impl LinearPlan {
    /// A short stable text form (`fused:32`, `batch:16`, `vec4:16`, `staged:32`, `lean:32`,
    /// `generic`, `gemm:8`, `gemm:8x4` (t x K slices), `coop`, `coop:4` (K slices), `coopi8`, `coopi8n96:4`: [`CoopKind::code`]) for the plan cache.
    pub(crate) fn code(&self) -> String {
        match self {
            LinearPlan::Fused { lanes } => format!("fused:{lanes}"),
            LinearPlan::Batch { lanes } => format!("batch:{lanes}"),
            LinearPlan::Vec4 { lanes } => format!("vec4:{lanes}"),
            LinearPlan::Staged { lanes } => format!("staged:{lanes}"),
            LinearPlan::Lean { lanes } => format!("lean:{lanes}"),
            LinearPlan::LeanQ { lanes } => format!("leanq:{lanes}"),
            LinearPlan::Generic => "generic".into(),
            LinearPlan::Gemm { t, splits: 1 } => format!("gemm:{t}"),
            LinearPlan::Gemm { t, splits } => format!("gemm:{t}x{splits}"),
            LinearPlan::Coop { splits: 1, kind } => kind.code().into(),
            LinearPlan::Coop { splits, kind } => format!("{}:{splits}", kind.code()),
        }
    }

    /// Parses [`LinearPlan::code`].
    pub(crate) fn from_code(code: &str) -> Option<LinearPlan> {
        let (kind, value) = code.split_once(':').unwrap_or((code, ""));
        let number = || value.parse::<u32>().ok();
        Some(match kind {
            "fused" => LinearPlan::Fused { lanes: number()? },
            "batch" => LinearPlan::Batch { lanes: number()? },
            "vec4" => LinearPlan::Vec4 { lanes: number()? },
            "staged" => LinearPlan::Staged { lanes: number()? },
            "lean" => LinearPlan::Lean { lanes: number()? },
            "leanq" => LinearPlan::LeanQ { lanes: number()? },
            "generic" if value.is_empty() => LinearPlan::Generic,
            coop if CoopKind::from_code(coop).is_some() => LinearPlan::Coop {
                splits: if value.is_empty() { 1 } else { number()? },
                kind: CoopKind::from_code(coop)?,
            },
            "gemm" => match value.split_once('x') {
                Some((t, splits)) => LinearPlan::Gemm {
                    t: t.parse().ok()?,
                    splits: splits.parse().ok()?,
                },
                None => LinearPlan::Gemm {
                    t: number()?,
                    splits: 1,
                },
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
#[path = "bitnet_tune_cache_tests.rs"]
mod tests;
