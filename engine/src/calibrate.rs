//! Calibration: how long each op class takes on this machine's CPU and GPU, measured once and
//! cached per adapter + driver + crate version (and the engine options that change GPU times:
//! binding cap, params mode, MSL hot paths) in the user's cache directory.
//!
//! The model per [`OpClass`] and backend is `fixed_s + per_unit_s · units` (units: elements for
//! quantization, `M·N·K` for BitLinear); the GPU's also pays its transfers, `bytes / bandwidth`
//! for what has to be uploaded and read back. [`measure`] times both backends at two sizes per
//! class (minimum of a few runs after a warm-up) and fits the two coefficients; host↔GPU
//! bandwidth is measured separately.
//!
//! Cache: `$BITNET_CALIBRATION_CACHE` if it names a directory, else `$XDG_CACHE_HOME/bitnet-wgpu`
//! (if absolute) or `~/.cache/bitnet-wgpu` (Linux), `~/Library/Caches/bitnet-wgpu` (macOS) or
//! `%LOCALAPPDATA%\bitnet-wgpu` (Windows); one small text file per key. Set
//! `BITNET_CALIBRATION_CACHE=off` (or `0`, `false`, `no`) to neither read nor write it; `on`, `1`,
//! `true`, `yes` keep the default place. A file that holds no
//! valid calibration for its key is logged, measured again and replaced.

use std::path::PathBuf;

use crate::context::Gpu;
use crate::msl::KernelPath;

/// Environment variable: `off`/`0` disables the calibration cache, a path relocates it.
pub const CALIBRATION_CACHE_ENV: &str = "BITNET_CALIBRATION_CACHE";

/// The op classes the dispatch layer models separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Weight quantization (units: elements of `w`).
    QuantizeWeights,
    /// Activation quantization (units: elements of `x`).
    QuantizeActivations,
    /// BitLinear with few rows, `M ≤ GEMV_ROWS` (units: `M·N·K`).
    LinearGemv,
    /// BitLinear with more rows (units: `M·N·K`).
    LinearGemm,
}

/// Largest M modelled as a GEMV (decode); larger M is a GEMM (prefill, batches).
pub(crate) const GEMV_ROWS: usize = 4;

impl OpClass {
    /// Every class, in the order of [`Calibration::cpu`] / [`Calibration::gpu`].
    pub const ALL: [OpClass; 4] = [
        OpClass::QuantizeWeights,
        OpClass::QuantizeActivations,
        OpClass::LinearGemv,
        OpClass::LinearGemm,
    ];

    /// Stable lower-case name (cache files, logs).
    pub const fn name(self) -> &'static str {
        match self {
            OpClass::QuantizeWeights => "quantize_weights",
            OpClass::QuantizeActivations => "quantize_activations",
            OpClass::LinearGemv => "bitlinear_gemv",
            OpClass::LinearGemm => "bitlinear_gemm",
        }
    }

    /// Position in [`OpClass::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A time model: `fixed_s + per_unit_s · units` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    /// Seconds per call.
    pub fixed_s: f64,
    /// Seconds per unit of work.
    pub per_unit_s: f64,
}

impl Cost {
    /// Predicted seconds for `units`.
    pub fn seconds(&self, units: f64) -> f64 {
        self.fixed_s + self.per_unit_s * units
    }

    /// The line through two measurements `(units, seconds)`, clamped to non-negative terms.
    fn fit((u1, t1): (f64, f64), (u2, t2): (f64, f64)) -> Cost {
        let per_unit_s = ((t2 - t1) / (u2 - u1)).max(0.0);
        Cost {
            fixed_s: (t1 - per_unit_s * u1).max(0.0),
            per_unit_s,
        }
    }
}

/// Measured costs of both backends on one machine (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// What it was measured on: adapter, backend, driver, crate version, CPU threads, and the
    /// engine's storage-binding cap, params mode and MSL hot paths (one line).
    pub key: String,
    /// Host→GPU bytes per second.
    pub upload_bytes_per_s: f64,
    /// GPU→host bytes per second.
    pub download_bytes_per_s: f64,
    /// CPU cost per op class, in [`OpClass::ALL`] order.
    pub cpu: [Cost; 4],
    /// GPU cost per op class (compute and per-call overhead; transfers are added per call).
    pub gpu: [Cost; 4],
}

impl Calibration {
    /// The cache key of a GPU context: adapter, backend, driver, crate version, the CPU threads
    /// cpu-ref runs on (rayon's pool here: `RAYON_NUM_THREADS` or the application's pool), and
    /// what of the engine's options and tuning changes its GPU times — a calibration measured
    /// under a binding cap (every op chunked), in another params mode, without the MSL kernels or
    /// with forced BitLinear plans must not be served to an engine without them.
    pub(crate) fn key_of(gpu: &Gpu) -> String {
        let i = &gpu.adapter_info;
        let threads = rayon::current_num_threads();
        let p = &gpu.msl.paths;
        let msl: String = [
            &p.quantize_weights,
            &p.quantize_activations,
            &p.bitlinear_gemv,
            &p.bitlinear_gemm,
        ]
        .map(|k| if *k == KernelPath::Msl { '1' } else { '0' })
        .iter()
        .collect();
        one_line(&format!(
            "{} | {:?} | {} {} | bitnet-wgpu {} | {threads} threads | binding {} | {:?} params \
             | msl {msl} | features {}{}{}",
            i.name,
            i.backend,
            i.driver,
            i.driver_info,
            env!("CARGO_PKG_VERSION"),
            gpu.caps.max_binding,
            gpu.caps.params_mode,
            gpu.caps.kernel_features_tag(),
            if crate::pipelines::full_shader_checks() {
                " | full shader checks"
            } else {
                ""
            },
            crate::ops::calibration_tag(gpu.id),
        ))
    }

    /// The text form (one `name value` pair per line; the first line is the key).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "key {}\nupload_bytes_per_s {}\ndownload_bytes_per_s {}\n",
            one_line(&self.key),
            self.upload_bytes_per_s,
            self.download_bytes_per_s
        );
        for c in OpClass::ALL {
            let (cpu, gpu) = (self.cpu[c.index()], self.gpu[c.index()]);
            s += &format!(
                "{} {} {} {} {}\n",
                c.name(),
                cpu.fixed_s,
                cpu.per_unit_s,
                gpu.fixed_s,
                gpu.per_unit_s
            );
        }
        // The file is complete only with this line (a reader must never take a cut-off number).
        s + "end\n"
    }

    /// Why this model cannot drive `Auto`, if it cannot: a bandwidth that is not a positive
    /// finite number, or a cost that is negative, NaN or infinite (the cache parser rejects the
    /// same values).
    pub(crate) fn invalid(&self) -> Option<(&'static str, &'static str)> {
        let bandwidth = |b: f64| b.is_finite() && b > 0.0;
        let cost = |c: &Cost| {
            [c.fixed_s, c.per_unit_s]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0)
        };
        if !bandwidth(self.upload_bytes_per_s) || !bandwidth(self.download_bytes_per_s) {
            Some((
                "bandwidth",
                "must be a positive finite number of bytes per second",
            ))
        } else if !self.cpu.iter().chain(&self.gpu).all(cost) {
            Some(("cost", "must be finite and not negative"))
        } else {
            None
        }
    }

    /// Parses [`Calibration::to_text`]; `None` if malformed or any value is not finite.
    pub fn from_text(text: &str) -> Option<Calibration> {
        let mut lines = text.lines();
        let key = lines.next()?.strip_prefix("key ")?.to_string();
        let mut num = |name: &str| -> Option<f64> {
            let v: f64 = lines.next()?.strip_prefix(name)?.trim().parse().ok()?;
            v.is_finite().then_some(v)
        };
        let (up, down) = (num("upload_bytes_per_s")?, num("download_bytes_per_s")?);
        let mut c = Calibration {
            key,
            upload_bytes_per_s: up,
            download_bytes_per_s: down,
            cpu: [Cost::default(); 4],
            gpu: [Cost::default(); 4],
        };
        for class in OpClass::ALL {
            let line = lines.next()?.strip_prefix(class.name())?;
            let v: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            if v.len() != 4 || v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return None;
            }
            c.cpu[class.index()] = Cost {
                fixed_s: v[0],
                per_unit_s: v[1],
            };
            c.gpu[class.index()] = Cost {
                fixed_s: v[2],
                per_unit_s: v[3],
            };
        }
        (lines.next() == Some("end") && up > 0.0 && down > 0.0).then_some(c)
    }

    /// The cache file for `key` (None when the cache is disabled or no directory is known).
    pub fn cache_path(key: &str) -> Option<PathBuf> {
        let dir = cache_dir()?;
        // FNV-1a of the key: a stable file name; the key inside guards against collisions.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Some(dir.join(format!("calibration-{hash:016x}.txt")))
    }

    /// The cached calibration for `key`, if any.
    pub(crate) fn load_cached(key: &str) -> Option<Calibration> {
        load_from(&Calibration::cache_path(key)?, key)
    }

    /// Writes this calibration to the cache (a failure is logged: the cache is an optimisation).
    pub(crate) fn save_cached(&self) {
        let Some(path) = Calibration::cache_path(&self.key) else {
            return;
        };
        if let Err(e) = crate::cache_file::write_atomic(&path, &self.to_text()) {
            log::warn!(
                "bitnet-wgpu: cannot write the calibration cache {}: {e}",
                path.display()
            );
        }
    }
}

/// The calibration for `key` in the cache file at `path`, if it holds one. A file there that does
/// not (malformed, cut short, out-of-range values, another key) is logged and ignored: the
/// engine measures again and replaces it.
fn load_from(path: &std::path::Path, key: &str) -> Option<Calibration> {
    let text = crate::cache_file::read_lossy(path)?;
    let c = Calibration::from_text(&text).filter(|c| c.key == key);
    if c.is_none() {
        log::warn!(
            "bitnet-wgpu: ignoring the calibration cache {}: not a valid calibration for {key:?}",
            path.display()
        );
    }
    c
}

/// `key` on one line (line breaks become blanks): a driver string may hold a line break, which
/// would split the cache file's key line, and then the file never parses.
fn one_line(key: &str) -> String {
    key.replace(['\n', '\r'], " ")
}

/// The cache directory (see the module docs), or None when disabled / unknown.
fn cache_dir() -> Option<PathBuf> {
    if let Some(place) = crate::cache_file::location_var(CALIBRATION_CACHE_ENV) {
        return place;
    }
    crate::cache_file::user_cache_dir()
}

#[path = "calibrate_measure.rs"]
mod measuring;
#[cfg(test)]
use measuring::{LINEAR_SIZES, QUANT_SIZES, fit_gpu, sample};
pub(crate) use measuring::{measure, measure_with, measuring};

#[cfg(test)]
#[path = "calibrate_tests.rs"]
mod tests;
