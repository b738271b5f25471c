//! The bench's own wgpu device on the engine's adapter, for its plain-wgpu kernels (the copy
//! roofline, the dispatch floor, the clock keeper): they run outside the engine, so that neither
//! the engine's checks nor its buffer pool figures see them.

/// A device of the adapter the engine uses.
pub struct ProbeDevice {
    /// The adapter's description.
    pub info: wgpu::AdapterInfo,
    /// The device, with `TIMESTAMP_QUERY` where the adapter has it.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Whether the device can write timestamps.
    pub timestamps: bool,
}

/// Opens a device on the adapter named `adapter_name` (the engine's adapter), or on the best
/// adapter when `None`, with the adapter's full limits.
pub fn open(adapter_name: Option<&str>, label: &str) -> Result<ProbeDevice, String> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    // The backends the engine searches: WGPU_BACKEND's, else the native ones (GL on request).
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
    if let Some(name) = adapter_name {
        adapters.retain(|a| a.get_info().name == name);
    }
    adapters.sort_by_key(|a| rank(&a.get_info()));
    let adapter = adapters
        .into_iter()
        .next()
        .ok_or_else(|| format!("no adapter for the {label}"))?;
    let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let desc = wgpu::DeviceDescriptor {
        label: Some(label),
        required_features: if timestamps {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        },
        required_limits: adapter.limits(),
        ..Default::default()
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&desc)).map_err(|e| e.to_string())?;
    Ok(ProbeDevice {
        info: adapter.get_info(),
        device,
        queue,
        timestamps,
    })
}

/// Same ranking as the engine: discrete, integrated, virtual, other, CPU; GL after native APIs.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let t = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    (t, u8::from(info.backend == wgpu::Backend::Gl))
}
