//! The one pipeline cache: every (kernel, entry point, override constants) compiled once.
//!
//! Pipelines use explicit layouts so one engine-wide bind group (group 1: params arena + non-finite
//! status word) serves every kernel, and so the layout can declare immediates. Shader modules and
//! pipelines are created inside wgpu error scopes: a broken shader becomes
//! [`Error::PipelineCreation`], never an uncaptured-error panic.
//!
//! WGSL modules keep wgpu's bounds checks (and every other runtime check) but not its forced loop
//! bounding: every loop of this project's kernels is bounded by its launch parameters, and the
//! extra counter wgpu adds to each loop can keep a driver from unrolling the small per-row loops
//! whose accumulators must live in registers. `BITNET_SHADER_CHECKS=full` (any case, blanks
//! ignored, as every environment value) restores it (for comparison, or a driver that
//! misbehaves).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bitnet_kernels_wgsl::KernelSource;

use crate::device::{PARAMS_MAX_BYTES, ParamsMode};
use crate::error::{Error, Result};
pub use crate::kernel::{Access, Kernel, Passthrough};

/// The uniform-mode params declaration (group 1, binding 0).
pub const PARAMS_UNIFORM_DECL: &str = "@group(1) @binding(0) var<uniform> params: Params;";
/// The immediates-mode declaration; kernels may write either, the cache rewrites to the mode in use.
pub const PARAMS_IMMEDIATE_DECL: &str = "var<immediate> params: Params;";

/// Cache key: kernel name, entry point, override constants (name, value bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: &'static str,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
}

/// A compiled pipeline and the layout of its group 0.
pub(crate) struct Compiled {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Layout of group 0 (the kernel's buffers).
    pub group0: wgpu::BindGroupLayout,
}

impl Compiled {
    /// Group 0 of one launch: `buffers` (`buffer, offset, size`) at bindings 0, 1, ..., created
    /// inside a validation scope (a bad binding is `Error::Validation` naming `kernel`).
    pub fn bind(
        &self,
        device: &wgpu::Device,
        kernel: &'static str,
        buffers: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<wgpu::BindGroup> {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, &(buffer, offset, size))| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: wgpu::BufferSize::new(size),
                }),
            })
            .collect();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel),
            layout: &self.group0,
            entries: &entries,
        });
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(crate::error::from_wgpu(
                e,
                format!("binding kernel `{kernel}`"),
            )),
            None => Ok(group),
        }
    }
}

/// Cache statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineStats {
    /// Pipelines compiled (cache misses).
    pub compiled: u64,
    /// Lookups served from the cache.
    pub hits: u64,
    /// Pipelines that failed to build (each tried once: later lookups return its error at once,
    /// and the op falls back as after any pipeline-creation error). Non-zero means some op of
    /// this device never runs its GPU kernel — a driver that rejects it, or a kernel above a
    /// device limit that no plan checked.
    pub failed: u64,
}

#[derive(Default)]
struct State {
    pipelines: HashMap<Key, Arc<Compiled>>,
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<Vec<Access>, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    /// Pipelines that failed to build, with the driver's message: compiling one again would
    /// fail again, at a shader compile's cost on every call of its op.
    failed: HashMap<Key, String>,
}

/// [`PipelineStats`] kept outside the cache's lock, which is held through every compile: a
/// statistics read waited for the compile in progress (31 ms on lavapipe, a reviewer's probe;
/// longer on drivers with slower compilers).
#[derive(Default)]
struct Counters {
    compiled: AtomicU64,
    hits: AtomicU64,
    failed: AtomicU64,
}

/// The engine's pipeline cache.
pub(crate) struct PipelineCache {
    device: wgpu::Device,
    mode: ParamsMode,
    features: wgpu::Features,
    /// Group 1 layout shared by every pipeline (params arena + status word).
    engine_layout: wgpu::BindGroupLayout,
    /// The device's `max_storage_buffers_per_shader_stage`.
    max_storage_buffers: u32,
    state: Mutex<State>,
    counters: Counters,
    faults: Arc<crate::fault::Faults>,
}

impl PipelineCache {
    /// An empty cache.
    pub fn new(
        device: wgpu::Device,
        mode: ParamsMode,
        features: wgpu::Features,
        engine_layout: wgpu::BindGroupLayout,
        faults: Arc<crate::fault::Faults>,
    ) -> Self {
        PipelineCache {
            max_storage_buffers: device.limits().max_storage_buffers_per_shader_stage,
            device,
            mode,
            features,
            engine_layout,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            faults,
        }
    }

    /// An injected pipeline failure: compiles a real broken shader through the real error
    /// scopes and reports its error as `kernel`'s.
    fn injected_failure(&self, kernel: &Kernel) -> Error {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let _ = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("bitnet-wgpu injected fault"),
                source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(
                    "@compute @workgroup_size(1) fn main( {",
                )),
            });
        let message = pollster::block_on(scope.pop())
            .map_or_else(|| "injected fault".to_string(), |e| e.to_string());
        Error::PipelineCreation {
            kernel: kernel.name(),
            entry: kernel.entry,
            message: format!("(injected fault) {message}"),
        }
    }

    /// The pipeline for `kernel` with `constants`, compiling it on first use.
    pub fn get(&self, kernel: &Kernel, constants: &[(&'static str, f64)]) -> Result<Arc<Compiled>> {
        if self.faults.take_pipeline() {
            return Err(self.injected_failure(kernel));
        }
        let key = Key {
            name: kernel.name(),
            entry: kernel.entry,
            constants: constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        };
        // Compiling under the lock keeps "compiled once" true under contention.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = st.pipelines.get(&key) {
            let c = Arc::clone(c);
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c);
        }
        if let Some(message) = st.failed.get(&key) {
            return Err(Error::PipelineCreation {
                kernel: kernel.name(),
                entry: kernel.entry,
                message: message.clone(),
            });
        }
        // The kernel's bindings plus the engine group's status buffer, against the device's
        // limit: a typed device limit (under `Auto` the op runs on the CPU), where creating the
        // layout failed as a pipeline fault with a message about an invalid layout.
        let storage = kernel.bindings.len() as u32 + crate::group::ENGINE_STORAGE_BUFFERS;
        let allowed = self.max_storage_buffers;
        if storage > allowed {
            return Err(Error::LimitExceeded {
                limit: "max_storage_buffers_per_shader_stage",
                requested: u64::from(storage),
                max: u64::from(allowed),
                what: format!("kernel `{}`", kernel.name()),
            });
        }
        if !self.features.contains(kernel.requires) {
            return Err(Error::Unsupported(format!(
                "kernel `{}` needs {:?}; the device has {:?}",
                kernel.name(),
                kernel.requires - self.features,
                self.features
            )));
        }
        let compiled = match self.compile(&mut st, kernel, constants) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                if let Error::PipelineCreation { message, .. } = &e {
                    st.failed.insert(key, message.clone());
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        st.pipelines.insert(key, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Statistics so far.
    pub fn stats(&self) -> PipelineStats {
        let c = &self.counters;
        PipelineStats {
            compiled: c.compiled.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    fn compile(
        &self,
        st: &mut State,
        kernel: &Kernel,
        constants: &[(&'static str, f64)],
    ) -> Result<Compiled> {
        let fail = |message: String| Error::PipelineCreation {
            kernel: kernel.name(),
            entry: kernel.entry,
            message,
        };
        // The SPIR-V of an int8 kernel is made before the scopes open: a failure there is ours.
        let spirv = match kernel.passthrough {
            Some(Passthrough::SpirvInt8) if !st.modules.contains_key(kernel.name()) => Some(
                crate::spirv::int8_coop_spirv(kernel.name(), &self.prepare_source(kernel.source))
                    .map_err(fail)?,
            ),
            _ => None,
        };
        let vscope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let iscope = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        if !st.modules.contains_key(kernel.name()) {
            let module = match (kernel.passthrough, spirv) {
                (Some(Passthrough::Msl(msl)), _) => crate::msl::create_module(&self.device, msl),
                (_, Some(words)) => {
                    crate::spirv::create_module(&self.device, kernel.name(), kernel.entry, words)
                }
                _ => wgsl_module(
                    &self.device,
                    wgpu::ShaderModuleDescriptor {
                        label: Some(kernel.name()),
                        source: wgpu::ShaderSource::Wgsl(Cow::Owned(
                            self.prepare_source(kernel.source),
                        )),
                    },
                ),
            };
            st.modules.insert(kernel.name(), module);
        }
        let (group0, layout) = st
            .layouts
            .entry(kernel.bindings.to_vec())
            .or_insert_with(|| self.layouts(kernel.bindings))
            .clone();
        let module = &st.modules[kernel.name()];
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: Some(&layout),
                module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            });
        let internal = pollster::block_on(iscope.pop());
        let validation = pollster::block_on(vscope.pop());
        if let Some(e) = validation.or(internal) {
            // Do not keep a module that failed to compile.
            st.modules.remove(kernel.name());
            return Err(fail(e.to_string()));
        }
        Ok(Compiled { pipeline, group0 })
    }

    /// The WGSL actually compiled: the params declaration is rewritten to the engine's mode.
    /// (Or, in a build with the `kernel-override` feature, an edited copy: `kernel_override.rs`.)
    fn prepare_source(&self, source: KernelSource) -> String {
        let text = crate::kernel_override::kernel_text(source);
        match self.mode {
            ParamsMode::Uniform => text.replace(PARAMS_IMMEDIATE_DECL, PARAMS_UNIFORM_DECL),
            ParamsMode::Immediates => text.replace(PARAMS_UNIFORM_DECL, PARAMS_IMMEDIATE_DECL),
        }
    }

    /// Group-0 layout for `bindings`, and the pipeline layout (group 0 + engine group 1).
    fn layouts(&self, bindings: &[Access]) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let group0 = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("bitnet-wgpu group0"),
                entries: &group0_entries(bindings),
            });
        let layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("bitnet-wgpu layout"),
                bind_group_layouts: &[Some(&group0), Some(&self.engine_layout)],
                immediate_size: immediate_size(self.mode),
            });
        (group0, layout)
    }
}

/// The group-0 layout entries of a kernel with `bindings`: binding `i` = `bindings[i]`, a storage
/// buffer visible to compute (also what the MSL kernels' buffer indices are derived from: see
/// `msl_tests.rs`).
pub(crate) fn group0_entries(bindings: &[Access]) -> Vec<wgpu::BindGroupLayoutEntry> {
    bindings
        .iter()
        .enumerate()
        .map(|(i, a)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: *a == Access::Read,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect()
}

/// The immediate size every pipeline layout declares in `mode` (0 = no immediates).
pub(crate) const fn immediate_size(mode: ParamsMode) -> u32 {
    match mode {
        ParamsMode::Immediates => PARAMS_MAX_BYTES,
        ParamsMode::Uniform => 0,
    }
}

/// Environment variable: `full` keeps wgpu's forced loop bounding (see the module docs).
pub const SHADER_CHECKS_ENV: &str = "BITNET_SHADER_CHECKS";

/// Creates a WGSL module with wgpu's runtime checks minus forced loop bounding (module docs).
fn wgsl_module(
    device: &wgpu::Device,
    desc: wgpu::ShaderModuleDescriptor<'_>,
) -> wgpu::ShaderModule {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    if full_shader_checks() {
        return device.create_shader_module(desc);
    }
    checks.force_loop_bounding = false;
    // SAFETY: only this project's kernels come here (`KernelSource` consts of kernels-wgsl,
    // naga-validated by its tests; or, in a build with the development-only `kernel-override`
    // feature, a developer's edited copy, trusted alike); each of their loops ends after a count
    // fixed by constants or launch parameters, so none is infinite. Bounds checks and all other
    // checks stay on.
    unsafe { device.create_shader_module_trusted(desc, checks) }
}

/// Whether this process's WGSL modules keep every runtime check (`BITNET_SHADER_CHECKS=full`):
/// part of the cache keys of measured times (calibration, BitLinear plans), as it changes them.
pub(crate) fn full_shader_checks() -> bool {
    full_checks(std::env::var(SHADER_CHECKS_ENV).ok().as_deref())
}

/// Whether a `BITNET_SHADER_CHECKS` value asks for every check: `full`, any case, blanks ignored.
/// Unset or blank: no. Anything else is logged (once per value: this runs per module) and
/// ignored.
fn full_checks(value: Option<&str>) -> bool {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return false;
    };
    if v.eq_ignore_ascii_case("full") {
        return true;
    }
    static WARNED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let mut last = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if *last != v {
        log::warn!("bitnet-wgpu: ignoring {SHADER_CHECKS_ENV}={v:?} (the only value is full)");
        v.clone_into(&mut last);
    }
    false
}

#[cfg(test)]
#[path = "pipelines_tests.rs"]
mod tests;
