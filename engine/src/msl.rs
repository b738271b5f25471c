//! The Metal hot path: the hand-written MSL kernels of `bitnet-kernels-msl` (simdgroup reductions,
//! simdgroup matrices), built through wgpu's passthrough shaders, for the hot BitNet ops.
//!
//! **Selection**, decided once per engine ([`MslState::probe`]) and reported by
//! [`Engine::info`](crate::Engine::info) (`hot_paths`): the MSL path is tried only on the Metal
//! backend, with `Features::PASSTHROUGH_SHADERS`, in the immediates params mode (the kernels read
//! their params at `buffer(0)`, where wgpu's Metal backend puts immediates), and unless
//! `BITNET_MSL` is off (`0`, `false`, `off`, `no`: the spellings of every on/off variable). Then
//! each MSL pipeline is created through the one pipeline cache, inside its error scopes; a hot op
//! whose pipelines fail (e.g. an older GPU without simdgroup matrices) keeps the WGSL kernels, and
//! the reason is logged. Everywhere else the WGSL kernels run, and
//! `hot_paths` says why.
//!
//! **Routing.** The BitNet ops call the `msl_*` hooks below first; a hook returns `None` (WGSL
//! then runs) when its op's path is not MSL or when the shape is outside the MSL kernels' limits
//! (`bitnet_kernels_msl::dispatch`) or needs chunking over the binding limit. Results are
//! bit-identical either way: both kernel sets follow `bitnet_cpu_ref::layout` exactly.
//!
//! Not executed here: there is no Metal device in this project's CI. The selection logic is unit
//! tested with the backend as a parameter; the kernels themselves are verified by
//! `kernels-msl`'s tests (clang compile + emulated-grid cross-checks against cpu-ref).

mod ops;

use std::borrow::Cow;
use std::fmt;

use bitnet_kernels_msl::{self as msl, MslKernel};

use crate::device::{Caps, ParamsMode};
use crate::pipelines::{Access, Kernel, PipelineCache};

use Access::{Read, ReadWrite};

/// Environment variable that turns the MSL path off when set to an off value (`0`, `false`,
/// `off`, `no`; any case, blanks ignored), e.g. to compare with WGSL.
pub const MSL_ENV: &str = "BITNET_MSL";

/// Largest M for which BitLinear on f32 activations uses the fused MSL GEMV (decode sizes).
const GEMV_MAX_M: usize = 8;

/// The implementation a hot op uses on an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelPath {
    /// Hand-written Metal Shading Language through wgpu passthrough shaders.
    Msl,
    /// The portable WGSL kernels; the string says why MSL is not used.
    Wgsl(String),
    /// `bitnet-cpu-ref` (the CPU engine).
    Cpu,
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelPath::Msl => f.write_str("MSL (passthrough)"),
            KernelPath::Wgsl(why) => write!(f, "WGSL ({why})"),
            KernelPath::Cpu => f.write_str("cpu-ref"),
        }
    }
}

/// The implementation of each hot BitNet op on an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HotPaths {
    /// `quantize_weights` (canonical sum + pack).
    pub quantize_weights: KernelPath,
    /// `quantize_activations`.
    pub quantize_activations: KernelPath,
    /// BitLinear on f32 activations with M ≤ 8 (decode): fused quantization + GEMV on MSL.
    pub bitlinear_gemv: KernelPath,
    /// BitLinear with M > 8 (prefill): GEMM (simdgroup matrices on MSL).
    pub bitlinear_gemm: KernelPath,
}

impl HotPaths {
    /// Every op on `path`.
    pub(crate) fn all(path: KernelPath) -> HotPaths {
        HotPaths {
            quantize_weights: path.clone(),
            quantize_activations: path.clone(),
            bitlinear_gemv: path.clone(),
            bitlinear_gemm: path,
        }
    }
}

impl fmt::Display for HotPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quantize_weights {}, quantize_activations {}, bitlinear GEMV {}, bitlinear GEMM {}",
            self.quantize_weights,
            self.quantize_activations,
            self.bitlinear_gemv,
            self.bitlinear_gemm
        )
    }
}

// The MSL pipelines: group-0 bindings are the descriptors' storage buffers, in order.
const ABS_SUM: Kernel = Kernel::msl(&msl::ABS_SUM_BLOCKS, &[Read, ReadWrite]);
const QUANT_W: Kernel = Kernel::msl(&msl::QUANTIZE_WEIGHTS, &[Read, Read, ReadWrite, ReadWrite]);
const QUANT_X: Kernel = Kernel::msl(&msl::QUANTIZE_ACTIVATIONS, &[Read, ReadWrite, ReadWrite]);
const GEMV: Kernel = Kernel::msl(&msl::BITLINEAR_GEMV, &[Read, Read, Read, ReadWrite]);
const GEMM: Kernel = Kernel::msl(&msl::BITLINEAR_GEMM, &[Read, Read, Read, Read, ReadWrite]);

/// Why the MSL path cannot be used with this backend, features, params mode and `BITNET_MSL`
/// value, or `None` when it can be tried.
pub(crate) fn unavailable(
    backend: wgpu::Backend,
    features: wgpu::Features,
    mode: ParamsMode,
    env: Option<&str>,
) -> Option<String> {
    // Read first, on every backend, so that a value it does not understand is logged (lib.rs's
    // promise for every variable) even where MSL cannot run anyway.
    let disabled = crate::cache_file::switch(MSL_ENV, env) == Some(false);
    if backend != wgpu::Backend::Metal {
        Some(format!("MSL needs the Metal backend, this is {backend:?}"))
    } else if !features.contains(wgpu::Features::PASSTHROUGH_SHADERS) {
        Some("the device lacks PASSTHROUGH_SHADERS".into())
    } else if mode != ParamsMode::Immediates {
        Some("params are in uniform mode; the MSL kernels take them as immediates".into())
    } else if disabled {
        Some(format!(
            "disabled by {MSL_ENV}={}",
            env.unwrap_or_default().trim()
        ))
    } else {
        None
    }
}

/// Why the MSL kernels cannot be trusted on the Metal adapter `name`, if they cannot: they are
/// written for 32-wide SIMD groups (8 per 256-thread group), which every Apple-designed GPU has,
/// but an Intel Mac's AMD (64) or Intel (8-32) GPU may not, and wgpu reports 4..=64 for every
/// Metal device. So MSL runs only on adapters named "Apple …" (Apple silicon); others use WGSL.
pub(crate) fn simd_width_unknown(backend: wgpu::Backend, name: &str) -> Option<String> {
    (backend == wgpu::Backend::Metal && !name.starts_with("Apple")).then(|| {
        format!("the MSL kernels need Apple GPUs' 32-wide SIMD groups; `{name}` is not one")
    })
}

/// Decides each hot op's path. `build` creates one MSL pipeline (`Err` = why it failed); it is
/// only called when [`unavailable`] finds nothing against MSL.
pub(crate) fn select(
    backend: wgpu::Backend,
    features: wgpu::Features,
    mode: ParamsMode,
    env: Option<&str>,
    mut build: impl FnMut(&Kernel) -> std::result::Result<(), String>,
) -> HotPaths {
    if let Some(why) = unavailable(backend, features, mode, env) {
        return HotPaths::all(KernelPath::Wgsl(why));
    }
    let mut path = |kernels: &[&Kernel]| {
        for k in kernels {
            if let Err(e) = build(k) {
                return KernelPath::Wgsl(format!("MSL pipeline `{}` failed: {e}", k.name()));
            }
        }
        KernelPath::Msl
    };
    HotPaths {
        quantize_weights: path(&[&ABS_SUM, &QUANT_W]),
        quantize_activations: path(&[&QUANT_X]),
        bitlinear_gemv: path(&[&GEMV]),
        bitlinear_gemm: path(&[&QUANT_X, &GEMM]),
    }
}

/// The MSL state of a GPU engine.
pub(crate) struct MslState {
    /// The path of each hot op.
    pub paths: HotPaths,
}

impl MslState {
    /// Decides the paths for a new GPU engine, creating the MSL pipelines where MSL is possible.
    pub fn probe(pipelines: &PipelineCache, caps: &Caps, info: &wgpu::AdapterInfo) -> MslState {
        #[cfg(test)]
        if let Some(paths) = FORCED_PATHS.with(|f| f.borrow_mut().take()) {
            return MslState { paths };
        }
        let backend = info.backend;
        let env = std::env::var(MSL_ENV).ok();
        let paths = match simd_width_unknown(backend, &info.name) {
            Some(why) => HotPaths::all(KernelPath::Wgsl(why)),
            None => select(
                backend,
                caps.features,
                caps.params_mode,
                env.as_deref(),
                |k| pipelines.get(k, &[]).map(|_| ()).map_err(|e| e.to_string()),
            ),
        };
        for (op, p) in [
            ("quantize_weights", &paths.quantize_weights),
            ("bitlinear GEMM", &paths.bitlinear_gemm),
        ]
        .into_iter()
        .chain([
            ("quantize_activations", &paths.quantize_activations),
            ("bitlinear GEMV", &paths.bitlinear_gemv),
        ]) {
            match p {
                KernelPath::Wgsl(why) if backend == wgpu::Backend::Metal => {
                    log::warn!("bitnet-wgpu: {op} uses WGSL on Metal: {why}");
                }
                _ => log::debug!("bitnet-wgpu: {op} path: {p}"),
            }
        }
        MslState { paths }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: the hot paths of the next engine this thread creates, instead of probing (so the
    /// MSL hooks' routing can be exercised off Metal; any MSL launch then fails to build).
    pub(crate) static FORCED_PATHS: std::cell::RefCell<Option<HotPaths>> =
        const { std::cell::RefCell::new(None) };
}

/// The passthrough shader module of `k` (the pipeline cache calls this inside its error scopes;
/// a Metal compile error becomes a caught validation error, never a panic).
pub(crate) fn create_module(device: &wgpu::Device, k: &MslKernel) -> wgpu::ShaderModule {
    let (x, y, z) = k.workgroup_size;
    let entry = wgpu::PassthroughShaderEntryPoint {
        name: Cow::Borrowed(k.entry_point),
        workgroup_size: (x, y, z),
    };
    let desc = wgpu::ShaderModuleDescriptorPassthrough {
        label: Some(k.name),
        entry_points: Cow::Owned(vec![entry]),
        msl: Some(Cow::Borrowed(k.source)),
        ..Default::default()
    };
    // SAFETY: the source is one of this project's MSL kernels, compiled and executed on an
    // emulated grid by kernels-msl's tests, with bounds-checked, barrier-ordered memory accesses;
    // its buffer slots match the explicit pipeline layout built from the same descriptor (the
    // indices wgpu-hal's Metal backend assigns for that layout: see `msl_tests.rs`).
    unsafe { device.create_shader_module_passthrough(desc) }
}

#[cfg(test)]
#[path = "msl_tests.rs"]
mod tests;
