//! [`EngineInfo`]: what an engine runs on, printable.

use crate::context::Gpu;
use crate::device::ParamsMode;
use crate::dispatch::DispatchPolicy;
use crate::engine::BackendKind;

/// The limits that matter to the engine's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyLimits {
    /// Largest storage binding (bytes), after any `EngineOptions` cap.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer (bytes).
    pub max_buffer_size: u64,
    /// Workgroups per grid dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroup memory (bytes).
    pub max_compute_workgroup_storage_size: u32,
    /// Immediate data (bytes).
    pub max_immediate_size: u32,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Storage binding offset alignment (bytes).
    pub min_storage_buffer_offset_alignment: u32,
}

/// Description of an engine's backend.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EngineInfo {
    /// CPU or GPU.
    pub backend_kind: BackendKind,
    /// Adapter name (or the CPU engine's description).
    pub adapter_name: String,
    /// wgpu backend (`Vulkan`, `Metal`, `Dx12`, `Gl`), or `"cpu-ref"`.
    pub backend: String,
    /// Device type (`DiscreteGpu`, `Cpu`, ...).
    pub device_type: String,
    /// Driver name.
    pub driver: String,
    /// Driver details (version).
    pub driver_info: String,
    /// Features the engine uses: those enabled on the device less
    /// `EngineOptions::disabled_features`, and less `SUBGROUP` where the device's subgroup layout
    /// failed the engine's self-test (empty on the CPU engine).
    pub features: wgpu::Features,
    /// Key limits (None on the CPU engine).
    pub limits: Option<KeyLimits>,
    /// Smallest subgroup size (0 on the CPU engine).
    pub subgroup_min_size: u32,
    /// Largest subgroup size (0 on the CPU engine).
    pub subgroup_max_size: u32,
    /// How kernel params are passed (None on the CPU engine).
    pub params_mode: Option<ParamsMode>,
    /// Whether the Vulkan driver offers int8 16×16×32 cooperative matrices, which the int8
    /// tensor-core GEMMs need (wgpu does not report them; the engine asks the driver).
    pub int8_cooperative_matrices: bool,
    /// Which implementation each hot BitNet op uses (MSL on Metal, WGSL and why, or cpu-ref).
    pub hot_paths: crate::msl::HotPaths,
    /// The dispatch policy when the info was taken (`Cpu` on the CPU engine): under `Cpu` the
    /// adapter above runs nothing.
    pub dispatch: DispatchPolicy,
    /// Whether the device has been lost (every op then runs on the CPU).
    pub device_lost: bool,
    /// Whether the kernels that wait inside their dispatch (the fused [`crate::LinearChain`],
    /// one-dispatch weight quantization) may run: false once one of their bounded waits gave up
    /// on this device (its run read as [`crate::Error::Aborted`] or re-ran another way), after
    /// which it takes the kernels that do not wait; false on the CPU engine.
    pub in_dispatch_waits: bool,
    /// Whether the lazy calibration of `Auto` dispatch failed: `Auto` then runs every op on the
    /// CPU until a background retry succeeds (or [`crate::Engine::calibrate`] /
    /// `set_calibration` installs a model), and [`crate::Engine::calibration`] reads `None`.
    pub calibration_failed: bool,
}

impl EngineInfo {
    /// Info of the CPU engine.
    pub(crate) fn cpu() -> EngineInfo {
        // cpu-ref's threads: rayon's pool (`RAYON_NUM_THREADS` or the application's pool).
        let threads = rayon::current_num_threads();
        EngineInfo {
            backend_kind: BackendKind::Cpu,
            adapter_name: format!("bitnet-cpu-ref ({threads} threads)"),
            backend: "cpu-ref".into(),
            device_type: "Cpu".into(),
            driver: String::new(),
            driver_info: String::new(),
            features: wgpu::Features::empty(),
            limits: None,
            subgroup_min_size: 0,
            subgroup_max_size: 0,
            params_mode: None,
            int8_cooperative_matrices: false,
            hot_paths: crate::msl::HotPaths::all(crate::msl::KernelPath::Cpu),
            dispatch: DispatchPolicy::Cpu,
            device_lost: false,
            in_dispatch_waits: false,
            calibration_failed: false,
        }
    }

    /// Info of a GPU engine.
    pub(crate) fn gpu(g: &Gpu) -> EngineInfo {
        let (i, l) = (&g.adapter_info, &g.caps.limits);
        EngineInfo {
            backend_kind: BackendKind::Gpu,
            adapter_name: i.name.clone(),
            backend: format!("{:?}", i.backend),
            device_type: format!("{:?}", i.device_type),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            features: g.caps.features,
            limits: Some(KeyLimits {
                max_storage_buffer_binding_size: g.caps.max_binding,
                max_buffer_size: g.caps.max_buffer,
                max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
                max_immediate_size: l.max_immediate_size,
                max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
                min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
            }),
            subgroup_min_size: g.caps.subgroup_min_size,
            subgroup_max_size: g.caps.subgroup_max_size,
            params_mode: Some(g.caps.params_mode),
            int8_cooperative_matrices: g.caps.int8_coop,
            hot_paths: g.msl.paths.clone(),
            dispatch: g.dispatch.policy(),
            device_lost: g.is_lost(),
            in_dispatch_waits: crate::ops::waits_allowed(g),
            calibration_failed: g
                .dispatch
                .installed()
                .is_some_and(|c| crate::recalibrate::is_stand_in(&c)),
        }
    }
}

impl std::fmt::Display for EngineInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "backend:   {:?} ({})", self.backend_kind, self.backend)?;
        writeln!(f, "adapter:   {} [{}]", self.adapter_name, self.device_type)?;
        writeln!(f, "hot ops:   {}", self.hot_paths)?;
        if self.backend_kind == BackendKind::Gpu {
            let runs = match (self.device_lost, self.dispatch) {
                (true, _) => "device LOST: every op runs on the CPU",
                (false, DispatchPolicy::Cpu) => "every op runs on the CPU; the adapter is unused",
                (false, DispatchPolicy::Gpu) => "every op runs on the GPU",
                (false, DispatchPolicy::Auto) if self.calibration_failed => {
                    "calibration FAILED: host-facing ops on the CPU until a retry succeeds, tensor ops where their data lives"
                }
                (false, DispatchPolicy::Auto) => {
                    "host-facing ops on the backend predicted faster, tensor ops where their data lives"
                }
            };
            writeln!(f, "dispatch:  {:?} ({runs})", self.dispatch)?;
            if !self.in_dispatch_waits {
                writeln!(
                    f,
                    "waits:     an in-dispatch wait gave up: the fused chain and one-dispatch weight quantization are off"
                )?;
            }
        }
        if !self.driver.is_empty() || !self.driver_info.is_empty() {
            writeln!(f, "driver:    {} {}", self.driver, self.driver_info)?;
        }
        if let Some(l) = &self.limits {
            writeln!(f, "features:  {:?}", self.features)?;
            if self.int8_cooperative_matrices {
                writeln!(f, "           int8 cooperative matrices (Vulkan driver)")?;
            }
            writeln!(
                f,
                "subgroups: {}..={}",
                self.subgroup_min_size, self.subgroup_max_size
            )?;
            writeln!(f, "params:    {:?}", self.params_mode)?;
            writeln!(
                f,
                "limits:    binding {} B, buffer {} B, {} workgroups/dim, {} invocations/wg, {} B workgroup memory, {} B immediates",
                l.max_storage_buffer_binding_size,
                l.max_buffer_size,
                l.max_compute_workgroups_per_dimension,
                l.max_compute_invocations_per_workgroup,
                l.max_compute_workgroup_storage_size,
                l.max_immediate_size
            )?;
        }
        Ok(())
    }
}
