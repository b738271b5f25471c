//! What the Vulkan driver made of the engine's kernels: registers, spills, workgroup memory and
//! whatever else it reports through `VK_KHR_pipeline_executable_properties`, per kernel and set of
//! override constants. wgpu shows none of this, and occupancy (how many workgroups fit an SM) is
//! what the latency-bound decode kernels live or die by.
//!
//! ```sh
//! cargo run --release -p bitnet-bench --example kernel_stats                    # the hot kernels
//! cargo run --release -p bitnet-bench --example kernel_stats -- \
//!     bitlinear_gemv_fused_subgroup:TPR=16,DEPTH=1 act_quant_vec4:TPR=64,REGS=16
//! cargo run --release -p bitnet-bench --example kernel_stats -- --source act_quant_vec4 > a.wgsl
//! cargo run --release -p bitnet-bench --example kernel_stats -- a.wgsl:TPR=64   # an edited copy
//! ```
//!
//! Each kernel is compiled as the engine compiles it (its WGSL with uniform params, override
//! constants substituted by naga, SPIR-V 1.3 with `Restrict` bounds checks), on the first Vulkan
//! device that is not a CPU (else the first), with every Vulkan 1.1-1.3 feature it has enabled.

use ash::vk;
use bitnet_kernels_wgsl::KernelSource;
use std::error::Error;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The kernels and constants printed when no argument is given: the decode hot path.
const DEFAULT_SET: &[&str] = &[
    "bitlinear_gemv_fused_subgroup:TPR=8,DEPTH=2",
    "bitlinear_gemv_fused_subgroup:TPR=16,DEPTH=2",
    "bitlinear_gemv_fused_subgroup:TPR=32,DEPTH=2",
    "bitlinear_gemv_fused_subgroup:TPR=16,DEPTH=1",
    "bitlinear_chain_coherent_subgroup:TPR=32,DEPTH=2,POLL_RMW=0",
    "bitlinear_chain_subgroup:TPR=32,DEPTH=2,POLL_RMW=0",
    "bitlinear_gemv_batch_subgroup:TPR=32,MR=8",
    "bitlinear_gemv_vec4_subgroup:TPR=32,MR=8",
    "act_quant_vec4:TPR=64,REGS=10",
    "act_quant_vec4:TPR=256,REGS=14",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name] = args.as_slice()
        && flag == "--source"
    {
        print!("{}", kernel_source(name)?.source);
        return Ok(());
    }
    let specs: Vec<&str> = match args.is_empty() {
        true => DEFAULT_SET.to_vec(),
        false => args.iter().map(String::as_str).collect(),
    };
    let vulkan = Vulkan::open()?;
    println!("device: {}", vulkan.name);
    for spec in specs {
        match kernel_stats(&vulkan, spec) {
            Ok(lines) => {
                println!("{spec}");
                for line in lines {
                    println!("    {line}");
                }
            }
            Err(e) => println!("{spec}: error: {e}"),
        }
    }
    Ok(())
}

/// The kernel named `name`, or the WGSL file `name` (`*.wgsl`) as a kernel of that name.
fn kernel_source(name: &str) -> Result<KernelSource> {
    if name.ends_with(".wgsl") {
        // A CLI run compiles a handful of kernels: leaking their text is the simple 'static.
        let source: &'static str = Box::leak(std::fs::read_to_string(name)?.into_boxed_str());
        let name: &'static str = Box::leak(name.to_string().into_boxed_str());
        return Ok(KernelSource { name, source });
    }
    bitnet_kernels_wgsl::all()
        .into_iter()
        .find(|k| k.name == name)
        .ok_or_else(|| format!("no kernel named {name:?}").into())
}

/// `name[:KEY=VALUE,...]` → the kernel's WGSL and its override constants.
fn parse_spec(spec: &str) -> Result<(KernelSource, Vec<(String, f64)>)> {
    let (name, constants) = spec.split_once(':').unwrap_or((spec, ""));
    let source = kernel_source(name)?;
    let mut out = Vec::new();
    for item in constants.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("constant {item:?} is not KEY=VALUE"))?;
        out.push((key.to_string(), value.parse::<f64>()?));
    }
    Ok((source, out))
}

/// A resource binding of a kernel: group, binding, and whether it is a uniform buffer.
type Binding = (u32, u32, bool);

/// The engine's SPIR-V of `kernel` with `constants` substituted, and the kernel's resource
/// bindings (for the pipeline layout).
fn spirv(kernel: &KernelSource, constants: &[(String, f64)]) -> Result<(Vec<u32>, Vec<Binding>)> {
    let constants: Vec<(&str, f64)> = constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let words = bitnet_wgpu::kernel_spirv(kernel, &constants)?;
    let module = naga::front::wgsl::parse_str(kernel.source)?;
    let bindings = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let b = var.binding.as_ref()?;
            Some((b.group, b.binding, var.space == naga::AddressSpace::Uniform))
        })
        .collect();
    Ok((words, bindings))
}

/// One Vulkan device that can report pipeline statistics.
struct Vulkan {
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    /// None where the driver lacks the extension (Mesa 22's lavapipe): the kernels still
    /// compile, which checks the SPIR-V and layouts, but nothing is reported.
    stats: Option<ash::khr::pipeline_executable_properties::Device>,
    name: String,
}

impl Vulkan {
    fn open() -> Result<Vulkan> {
        // SAFETY: loading the system Vulkan loader; every handle below is destroyed in Drop.
        let entry = unsafe { ash::Entry::load()? };
        let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
        let instance = unsafe {
            entry.create_instance(
                &vk::InstanceCreateInfo::default().application_info(&app),
                None,
            )?
        };
        let devices = unsafe { instance.enumerate_physical_devices()? };
        let props = |pd| unsafe { instance.get_physical_device_properties(pd) };
        let pd = devices
            .iter()
            .copied()
            .find(|&pd| props(pd).device_type != vk::PhysicalDeviceType::CPU)
            .or_else(|| devices.first().copied())
            .ok_or("no Vulkan device")?;
        let name = props(pd)
            .device_name_as_c_str()?
            .to_string_lossy()
            .into_owned();
        let family = unsafe { instance.get_physical_device_queue_family_properties(pd) }
            .iter()
            .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
            .ok_or("no compute queue")? as u32;
        // Every 1.1-1.3 feature the device has (the kernels need integer dot products,
        // subgroups, f16 ...), plus executable statistics.
        let mut v11 = vk::PhysicalDeviceVulkan11Features::default();
        let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
        let mut v13 = vk::PhysicalDeviceVulkan13Features::default();
        let mut features = vk::PhysicalDeviceFeatures2::default()
            .push_next(&mut v11)
            .push_next(&mut v12)
            .push_next(&mut v13);
        unsafe { instance.get_physical_device_features2(pd, &mut features) };
        let base = features.features;
        v11.p_next = std::ptr::null_mut();
        v12.p_next = std::ptr::null_mut();
        v13.p_next = std::ptr::null_mut();
        let mut exec = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
            .pipeline_executable_info(true);
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities)];
        let ext = ash::khr::pipeline_executable_properties::NAME;
        let has_stats = unsafe { instance.enumerate_device_extension_properties(pd)? }
            .iter()
            .any(|e| e.extension_name_as_c_str() == Ok(ext));
        let extensions = match has_stats {
            true => vec![ext.as_ptr()],
            false => Vec::new(),
        };
        let mut info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&extensions)
            .enabled_features(&base)
            .push_next(&mut v11)
            .push_next(&mut v12)
            .push_next(&mut v13);
        if has_stats {
            info = info.push_next(&mut exec);
        }
        let device = unsafe { instance.create_device(pd, &info, None)? };
        let stats = has_stats
            .then(|| ash::khr::pipeline_executable_properties::Device::new(&instance, &device));
        Ok(Vulkan {
            _entry: entry,
            instance,
            device,
            stats,
            name,
        })
    }
}

impl Drop for Vulkan {
    fn drop(&mut self) {
        // SAFETY: every pipeline object was destroyed by kernel_stats; nothing is in flight.
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

/// The driver's statistics of every executable of `spec`'s compute pipeline, one line each.
fn kernel_stats(v: &Vulkan, spec: &str) -> Result<Vec<String>> {
    let (source, constants) = parse_spec(spec)?;
    let (words, bindings) = spirv(&source, &constants)?;
    let d = &v.device;
    let groups = bindings.iter().map(|b| b.0 + 1).max().unwrap_or(0);
    let mut out = Vec::new();
    // SAFETY: objects are created from valid create infos on `d` and destroyed before returning.
    unsafe {
        let module =
            d.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)?;
        let mut set_layouts = Vec::new();
        for g in 0..groups {
            let entries: Vec<vk::DescriptorSetLayoutBinding> = bindings
                .iter()
                .filter(|b| b.0 == g)
                .map(|&(_, binding, uniform)| {
                    vk::DescriptorSetLayoutBinding::default()
                        .binding(binding)
                        .descriptor_type(match uniform {
                            true => vk::DescriptorType::UNIFORM_BUFFER,
                            false => vk::DescriptorType::STORAGE_BUFFER,
                        })
                        .descriptor_count(1)
                        .stage_flags(vk::ShaderStageFlags::COMPUTE)
                })
                .collect();
            let info = vk::DescriptorSetLayoutCreateInfo::default().bindings(&entries);
            set_layouts.push(d.create_descriptor_set_layout(&info, None)?);
        }
        let layout = d.create_pipeline_layout(
            &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
            None,
        )?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main");
        let flags = match v.stats {
            Some(_) => vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR,
            None => vk::PipelineCreateFlags::empty(),
        };
        let info = vk::ComputePipelineCreateInfo::default()
            .flags(flags)
            .stage(stage)
            .layout(layout);
        let created = d.create_compute_pipelines(vk::PipelineCache::null(), &[info], None);
        let result = match created {
            Ok(pipelines) => {
                let p = pipelines[0];
                let r = executable_lines(v, p);
                d.destroy_pipeline(p, None);
                r
            }
            Err((_, e)) => Err(format!("pipeline creation failed: {e}").into()),
        };
        d.destroy_pipeline_layout(layout, None);
        for l in set_layouts {
            d.destroy_descriptor_set_layout(l, None);
        }
        d.destroy_shader_module(module, None);
        out.extend(result?);
    }
    Ok(out)
}

/// `name: value` for every statistic of every executable of pipeline `p`.
fn executable_lines(v: &Vulkan, p: vk::Pipeline) -> Result<Vec<String>> {
    let Some(stats) = &v.stats else {
        return Ok(vec![
            "compiled; the driver has no VK_KHR_pipeline_executable_properties".into(),
        ]);
    };
    let mut out = Vec::new();
    // SAFETY: `p` was created with CAPTURE_STATISTICS on a device with pipelineExecutableInfo.
    unsafe {
        let executables = stats
            .get_pipeline_executable_properties(&vk::PipelineInfoKHR::default().pipeline(p))?;
        for (i, e) in executables.iter().enumerate() {
            let name = e.name_as_c_str()?.to_string_lossy().into_owned();
            out.push(format!("[{name}] subgroup size {}", e.subgroup_size));
            let info = vk::PipelineExecutableInfoKHR::default()
                .pipeline(p)
                .executable_index(i as u32);
            for s in stats.get_pipeline_executable_statistics(&info)? {
                let value = match s.format {
                    vk::PipelineExecutableStatisticFormatKHR::BOOL32 => {
                        (s.value.b32 != 0).to_string()
                    }
                    vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
                    vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => s.value.f64.to_string(),
                    _ => "?".into(),
                };
                let name = s.name_as_c_str()?.to_string_lossy().into_owned();
                // NVIDIA's driver (580) reports local memory as 2^36 + the bytes per thread.
                let note = match (name.as_str(), s.format) {
                    ("Local Memory Size", vk::PipelineExecutableStatisticFormatKHR::UINT64)
                        if s.value.u64 >= 1 << 36 =>
                    {
                        format!(" (2^36 + {} bytes)", s.value.u64 - (1 << 36))
                    }
                    _ => String::new(),
                };
                out.push(format!("{name}: {value}{note}"));
            }
        }
    }
    Ok(out)
}
