//! Adapter choice, and the features and limits the engine requests from a device.
//!
//! Adapter ranking: discrete > integrated > virtual > other > software (CPU), and native backends
//! (Vulkan, Metal, DX12) before GL. The backends searched are the native ones
//! (`wgpu::Backends::PRIMARY`) unless `WGPU_BACKEND` (comma list, e.g. `vulkan` or `gl`) names
//! others: wgpu's GL backend shares one GL context behind a lock whose wait times out with a
//! panic inside wgpu-hal, and concurrent callers hit it (three decode-attention cross-check tests
//! on Mesa's llvmpipe GL, run together: each panicked with "Could not lock adapter context. This
//! is most-likely a deadlock."), so GL is used only on request. `WGPU_ADAPTER_NAME` keeps only adapters whose name
//! contains it (case-insensitive, surrounding blanks ignored; blank: every adapter).

use crate::error::{Error, Result};

/// Features the engine uses when the adapter has them (never required).
pub(crate) const WANTED_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP
    .union(wgpu::Features::SUBGROUP_BARRIER)
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::IMMEDIATES)
    .union(wgpu::Features::PASSTHROUGH_SHADERS)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    .union(wgpu::Features::MEMORY_DECORATION_COHERENT);

/// Bytes of per-call parameters every kernel may use (`Params` struct size limit).
pub const PARAMS_MAX_BYTES: u32 = 128;

/// The process's wgpu instance for the environment's settings (`WGPU_BACKEND`, `WGPU_DEBUG`, ...):
/// made on first use and kept until the process exits, one per distinct set of settings.
///
/// Kept, because dropping a process's last instance unloads the Vulkan loader and the driver
/// with it, and the NVIDIA driver (580.159, H200) does not survive being loaded again and again:
/// a process that made and dropped one engine after another found no adapter at its 30th (the
/// loader: "Could not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr' for ICD
/// libGLX_nvidia.so.0"), in every run. With the instance kept, 80 engines in a row found the GPU
/// and each took about 135 ms to make instead of 250 (`tests/tests/engine_churn.rs`).
pub(crate) fn instance_from_env() -> wgpu::Instance {
    static INSTANCES: std::sync::Mutex<Vec<(String, wgpu::Instance)>> =
        std::sync::Mutex::new(Vec::new());
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // The settings are plain flags and options; their debug text tells two sets apart.
    let key = format!("{desc:?}");
    let mut instances = INSTANCES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, instance)) = instances.iter().find(|(k, _)| *k == key) {
        return instance.clone();
    }
    let instance = wgpu::Instance::new(desc);
    instances.push((key, instance.clone()));
    instance
}

/// Lower is better: discrete first, software last.
fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Lower is better: GL last (its compute support is the weakest).
fn backend_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Gl => 1,
        _ => 0,
    }
}

/// Picks the best adapter, honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`.
pub(crate) fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let name = std::env::var("WGPU_ADAPTER_NAME").ok();
    choose_adapter_named(instance, name.as_deref())
}

/// [`choose_adapter`] with an explicit name filter instead of `WGPU_ADAPTER_NAME`.
pub(crate) fn choose_adapter_named(
    instance: &wgpu::Instance,
    name: Option<&str>,
) -> Result<wgpu::Adapter> {
    let backends = searched_backends(wgpu::Backends::from_env());
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let found: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
    if let Some(wanted) = name {
        let wanted = wanted.trim().to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&wanted));
        if adapters.is_empty() {
            return Err(Error::NoAdapter(format!(
                "adapter name {wanted:?} (WGPU_ADAPTER_NAME) matches none of the adapters found: {found:?}"
            )));
        }
    }
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        (
            device_type_rank(info.device_type),
            backend_rank(info.backend),
        )
    });
    adapters.into_iter().next().ok_or_else(|| {
        let gl = if backends.contains(wgpu::Backends::GL) {
            ""
        } else {
            "; GL is searched only when WGPU_BACKEND names it"
        };
        Error::NoAdapter(format!(
            "no adapter on backends {backends:?} (WGPU_BACKEND={:?}{gl})",
            std::env::var("WGPU_BACKEND").ok()
        ))
    })
}

/// The backends searched for an adapter: those `WGPU_BACKEND` names (`from_env`), else the native
/// ones — GL only on request (see the module docs).
fn searched_backends(from_env: Option<wgpu::Backends>) -> wgpu::Backends {
    from_env.unwrap_or(wgpu::Backends::PRIMARY)
}

/// One line naming an adapter, for logs and errors.
pub(crate) fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// Requests a device with the adapter's real limits and every wanted feature it has, under the
/// process-wide lifecycle lock (`lifecycle.rs`: concurrent device creation and destruction can
/// deadlock a driver).
pub(crate) fn request_device(adapter: &wgpu::Adapter) -> Result<(wgpu::Device, wgpu::Queue)> {
    crate::lifecycle::serialized(|| request_device_unlocked(adapter))
}

fn request_device_unlocked(adapter: &wgpu::Adapter) -> Result<(wgpu::Device, wgpu::Queue)> {
    let features = adapter.features() & WANTED_FEATURES;
    let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        // SAFETY: the experimental opt-in only acknowledges that cooperative-matrix support in
        // wgpu is young; the engine uses it solely through kernels gated on this feature.
        unsafe { wgpu::ExperimentalFeatures::enabled() }
    } else {
        wgpu::ExperimentalFeatures::disabled()
    };
    let desc = wgpu::DeviceDescriptor {
        label: Some("bitnet-wgpu"),
        required_features: features,
        // The defaults cap storage bindings at 128 MiB; ask for what the hardware really has.
        required_limits: adapter.limits(),
        experimental_features: experimental,
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    };
    pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
        let held = match crate::context::live_contexts() {
            0 => String::new(),
            n => format!(
                " (this process holds {n} other GPU engines, each with a device of its own; \
                 drivers cap the devices of a process: NVIDIA's Vulkan driver 580.159 refused \
                 the 64th, as \"Parent device is lost\")"
            ),
        };
        Error::NoAdapter(format!(
            "request_device failed on {}: {e}{held}",
            describe(&adapter.get_info())
        ))
    })
}

/// How per-call kernel parameters reach the shader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamsMode {
    /// `var<immediate> params: Params;` set with `set_immediates` (needs `Features::IMMEDIATES`
    /// and `max_immediate_size >= PARAMS_MAX_BYTES`).
    Immediates,
    /// `var<uniform> params: Params;` at `@group(1) @binding(0)`, one slot per dispatch of a
    /// uniform arena written once per submit (dynamic offsets).
    Uniform,
}

/// What the engine knows about its device: features, limits and the choices derived from them.
#[derive(Debug, Clone)]
pub(crate) struct Caps {
    /// Features enabled on the device, less `EngineOptions::disabled_features` and less
    /// `SUBGROUP` where the device's subgroup layout failed its self-test
    /// (`subgroup_probe.rs`): what kernels may use.
    pub features: wgpu::Features,
    /// Limits of the device.
    pub limits: wgpu::Limits,
    /// Smallest subgroup size (8 on lavapipe, 32 on NVIDIA — never assume).
    pub subgroup_min_size: u32,
    /// Largest subgroup size.
    pub subgroup_max_size: u32,
    /// How params are passed.
    pub params_mode: ParamsMode,
    /// Effective storage-binding limit (the device's, or lower when an option caps it).
    pub max_binding: u64,
    /// Effective buffer-size limit.
    pub max_buffer: u64,
    /// The Vulkan driver offers the int8 cooperative matrices of the int8 GEMMs (`spirv.rs`).
    pub int8_coop: bool,
}

impl Caps {
    /// Derives the capabilities of `device`, applying `options`.
    pub fn new(
        device: &wgpu::Device,
        info: &wgpu::AdapterInfo,
        options: &crate::engine::EngineOptions,
    ) -> Caps {
        let features = device.features() - options.disabled_features;
        let limits = device.limits();
        let immediates_ok = features.contains(wgpu::Features::IMMEDIATES)
            && limits.max_immediate_size >= PARAMS_MAX_BYTES;
        let params_mode = if immediates_ok && !options.force_uniform_params {
            ParamsMode::Immediates
        } else {
            ParamsMode::Uniform
        };
        let cap = options.max_binding_bytes.unwrap_or(u64::MAX);
        Caps {
            features,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            params_mode,
            max_binding: limits.max_storage_buffer_binding_size.min(cap),
            max_buffer: limits.max_buffer_size,
            limits,
            int8_coop: info.backend == wgpu::Backend::Vulkan
                && features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
                && crate::spirv::driver_has_int8_coop(device),
        }
    }

    /// The features that decide which kernels run, for the keys of measured times (plans,
    /// calibration): an engine without subgroups (disabled, or dropped by the layout self-test)
    /// times other kernels than one with them, and must not share their cached choices.
    pub fn kernel_features_tag(&self) -> String {
        [
            (wgpu::Features::SUBGROUP, "subgroups"),
            (wgpu::Features::SHADER_F16, "f16"),
            (wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX, "coop"),
            (wgpu::Features::MEMORY_DECORATION_COHERENT, "coherent"),
        ]
        .iter()
        .filter(|(f, _)| self.has(*f))
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join("+")
    }

    /// Whether the device has all of `f`.
    pub fn has(&self, f: wgpu::Features) -> bool {
        self.features.contains(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_prefers_discrete_then_integrated_then_software() {
        use wgpu::DeviceType::*;
        let order = [DiscreteGpu, IntegratedGpu, VirtualGpu, Other, Cpu];
        assert!(
            order
                .windows(2)
                .all(|w| device_type_rank(w[0]) < device_type_rank(w[1]))
        );
        assert!(backend_rank(wgpu::Backend::Vulkan) < backend_rank(wgpu::Backend::Gl));
    }

    /// Unset, the native backends are searched and GL is not; named, exactly what is named.
    #[test]
    fn gl_is_searched_only_when_named() {
        use wgpu::Backends;
        let default = searched_backends(None);
        assert!(default.contains(Backends::VULKAN | Backends::METAL | Backends::DX12));
        assert!(!default.contains(Backends::GL));
        assert_eq!(searched_backends(Some(Backends::GL)), Backends::GL);
        let named = Backends::VULKAN | Backends::GL;
        assert_eq!(searched_backends(Some(named)), named);
    }

    #[test]
    fn adapter_name_filter_selects_or_reports_what_exists() {
        let instance = instance_from_env();
        let best = choose_adapter_named(&instance, None).expect("a GPU adapter (CI has lavapipe)");
        let name = best.get_info().name;
        let again =
            choose_adapter_named(&instance, Some(&name[..name.len().min(4)].to_uppercase()))
                .expect("case-insensitive substring match");
        assert!(
            again
                .get_info()
                .name
                .to_lowercase()
                .contains(&name[..name.len().min(4)].to_lowercase())
        );
        match choose_adapter_named(&instance, Some("no-such-adapter-42")) {
            Err(Error::NoAdapter(msg)) => {
                assert!(msg.contains("no-such-adapter-42") && msg.contains(&name))
            }
            other => panic!("expected NoAdapter, got {:?}", other.map(|a| a.get_info())),
        }
    }

    /// `WGPU_ADAPTER_NAME` is read as every environment value is: surrounding blanks ignored
    /// (a padded name, e.g. from `$(cat file)`, matched no adapter).
    #[test]
    fn adapter_name_filter_ignores_surrounding_blanks() {
        let instance = instance_from_env();
        let best = choose_adapter_named(&instance, None).expect("a GPU adapter (CI has lavapipe)");
        let padded = format!(" {}\n", best.get_info().name);
        let got = choose_adapter_named(&instance, Some(&padded)).map(|a| a.get_info().name);
        assert_eq!(got.ok(), Some(best.get_info().name), "{padded:?}");
    }
}
