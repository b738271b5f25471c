//! The Vulkan hot path for prefill: int8 cooperative matrices, which WGSL cannot express.
//!
//! WGSL has no 8-bit type, so cooperative matrices there are f16 or f32; NVIDIA's tensor cores
//! multiply int8 at twice the f16 rate, and BitLinear's operands are int8 activations and ternary
//! weights whose products sum exactly in i32. So the int8 GEMM is written as a WGSL skeleton
//! (`bitlinear_gemm_coop_i8.wgsl` behind a header that sets its tile width: f16 A / B and f32 C
//! matrices over byte-staged operands), compiled here by naga to SPIR-V exactly as wgpu would,
//! and then **retyped**:
//!
//! | skeleton type | becomes |
//! |---|---|
//! | `coop_mat16x16<f16, A>` (f32 in SPIR-V: naga types a loaded matrix by its pointer) | 16 × 32 int8 (use A) |
//! | `coop_mat16x16<f16, B>` (likewise) | 32 × 16 int8 (use B) |
//! | `coop_mat16x16<f32, C>` | 16 × 16 int32 (accumulator) |
//!
//! plus `OpCapability Int8` and the signed-components operands on every multiply-add. Nothing
//! else changes: the skeleton's loads and stores already go through `vec4<f32>` pointers to raw
//! bytes (SPV_KHR_cooperative_matrix lets a load or store use any scalar or vector pointer, with
//! strides in its elements), so each instruction means the int8 operation once retyped.
//! The module reaches the driver through `create_shader_module_passthrough` (wgpu's validator
//! knows no int8 matrices either), so it must also carry the Vulkan binding numbers wgpu gives the
//! pipeline layout, which wgpu would otherwise patch in itself ([`vulkan_bindings`]).
//!
//! wgpu reports only the cooperative-matrix configurations naga can express, so
//! [`driver_has_int8_coop`] asks the Vulkan driver itself whether it offers int8 16 × 16 × 32
//! (SPIR-V using a configuration the driver lacks is undefined behaviour, a crash at worst). Even
//! then the engine only *offers* these kernels after its device self-test
//! (`ops/bitnet_coop.rs`) matched the dot4 GEMM's exact accumulators, and a pipeline the driver
//! rejects is a caught pipeline-creation error there.
//!
//! [`kernel_spirv`] hands the same compilation of any kernel, override constants substituted, to
//! tools that ask a Vulkan driver what it made of it (`bench/examples/kernel_stats.rs`).

use std::borrow::Cow;

use naga::back::spv;
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// SPIR-V magic number (first header word).
const MAGIC: u32 = 0x0723_0203;
/// Header words before the first instruction; word 3 is the id bound.
const HEADER: usize = 5;

// Opcodes and enumerants of the SPIR-V 1.6 / SPV_KHR_cooperative_matrix grammar used below.
const OP_CAPABILITY: u32 = 17;
const OP_TYPE_INT: u32 = 21;
const OP_TYPE_FLOAT: u32 = 22;
const OP_CONSTANT: u32 = 43;
const OP_TYPE_COOP_MATRIX: u32 = 4456;
const OP_COOP_MUL_ADD: u32 = 4459;
const CAPABILITY_INT8: u32 = 39;
/// `MatrixASignedComponentsKHR | MatrixBSignedComponentsKHR | MatrixCSignedComponentsKHR |
/// MatrixResultSignedComponentsKHR`.
const SIGNED_OPERANDS: u32 = 0xF;
/// `MatrixAKHR`, `MatrixBKHR`, `MatrixAccumulatorKHR`.
const USE_A: u32 = 0;
const USE_B: u32 = 1;
const USE_C: u32 = 2;

/// The SPIR-V of `source` (a WGSL int8 skeleton with its params declaration already in the
/// engine's form), compiled by naga and retyped to int8 matrices; `Err` says what failed.
pub(crate) fn int8_coop_spirv(name: &str, source: &str) -> Result<Vec<u32>, String> {
    retype_int8(&compile(name, source, &[])?)
}

/// The SPIR-V 1.3 of a WGSL compute kernel (entry point `main`, params as the kernel files
/// declare them) with its override `constants` substituted, compiled as the engine compiles its
/// Vulkan passthrough modules — for tools that ask a driver what it made of a kernel
/// (`bench/examples/kernel_stats.rs` reads registers and spills). A parse, validation or
/// override error is [`Error::PipelineCreation`](crate::Error::PipelineCreation).
pub fn kernel_spirv(
    kernel: &bitnet_kernels_wgsl::KernelSource,
    constants: &[(&str, f64)],
) -> crate::Result<Vec<u32>> {
    compile(kernel.name, kernel.source, constants).map_err(|message| {
        crate::Error::PipelineCreation {
            kernel: kernel.name,
            entry: "main",
            message,
        }
    })
}

/// naga's SPIR-V 1.3 for `source` with `constants` substituted, wgpu's index bounds checks
/// (`Restrict`) and no forced loop bounding (the engine's WGSL modules drop it too:
/// `pipelines.rs`).
fn compile(name: &str, source: &str, constants: &[(&str, f64)]) -> Result<Vec<u32>, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    let capabilities = Capabilities::SUBGROUP
        | Capabilities::SHADER_FLOAT16
        | Capabilities::COOPERATIVE_MATRIX
        | Capabilities::IMMEDIATES
        | Capabilities::MEMORY_DECORATION_COHERENT;
    let info = Validator::new(ValidationFlags::all(), capabilities)
        .validate(&module)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(source)))?;
    let binding_map = vulkan_bindings(&module);
    let mut table = naga::back::PipelineConstants::default();
    for &(key, value) in constants {
        table.insert(key.to_string(), value);
    }
    let entry = Some((naga::ShaderStage::Compute, "main"));
    let (module, info) =
        naga::back::pipeline_constants::process_overrides(&module, &info, entry, &table)
            .map_err(|e| format!("{name}: override constants: {e}"))?;
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    let options = spv::Options {
        lang_version: (1, 3),
        flags: spv::WriterFlags::empty(),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: restrict,
            buffer: restrict,
            image_load: restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: false,
        binding_map,
        ..spv::Options::default()
    };
    spv::write_vec(&module, &info, &options, None).map_err(|e| format!("{name}: SPIR-V: {e}"))
}

/// The Vulkan binding numbers of `module`'s resources, as wgpu assigns them: wgpu-hal numbers the
/// entries of each bind group layout densely in binding order (`@binding(1)` of a group whose
/// layout has no binding 0 is Vulkan binding 0) and remaps the modules it compiles itself, but a
/// passthrough module must already say the Vulkan numbers. The engine's layouts hold exactly
/// the bindings its kernels declare (group 1 has the params uniform at 0 only in uniform params
/// mode), so each group's declared bindings, ranked, are its layout's. Without this, in
/// immediates mode a passthrough kernel's status words (`@group(1) @binding(1)`) pointed at a
/// binding the layout does not have, and its non-finite flags were lost.
fn vulkan_bindings(module: &naga::Module) -> spv::BindingMap {
    let mut declared: Vec<naga::ResourceBinding> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| var.binding)
        .collect();
    declared.sort();
    declared.dedup();
    let mut map = spv::BindingMap::default();
    let mut rank = 0;
    for (i, rb) in declared.iter().enumerate() {
        if i > 0 && declared[i - 1].group != rb.group {
            rank = 0;
        }
        map.insert(
            *rb,
            spv::BindingInfo {
                descriptor_set: rb.group,
                binding: rank,
                binding_array_size: None,
            },
        );
        rank += 1;
    }
    map
}

/// One instruction: its opcode and words (the first word holds count and opcode).
fn instructions(words: &[u32]) -> Result<Vec<(u32, &[u32])>, String> {
    let mut out = Vec::new();
    let mut at = HEADER;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        if count == 0 || at + count > words.len() {
            return Err(format!("malformed SPIR-V instruction at word {at}"));
        }
        out.push((words[at] & 0xFFFF, &words[at..at + count]));
        at += count;
    }
    Ok(out)
}

/// The first word of an instruction of `count` words.
fn head(op: u32, count: usize) -> u32 {
    ((count as u32) << 16) | op
}

/// Retypes a skeleton module's A / B (f16, f32 or u32) and f32 C cooperative matrices (all
/// 16 × 16) to int8 16 × 32 / 32 × 16 and int32 16 × 16 (module docs); `Err` if the module is not
/// such a skeleton.
pub(crate) fn retype_int8(words: &[u32]) -> Result<Vec<u32>, String> {
    if words.len() < HEADER || words[0] != MAGIC {
        return Err("not a SPIR-V module".into());
    }
    let insts = instructions(words)?;
    let mut bound = words[3];
    let mut fresh = || {
        bound += 1;
        bound - 1
    };
    let find_int = |width: u32, signed: u32| {
        insts
            .iter()
            .find(|(op, w)| *op == OP_TYPE_INT && w[2] == width && w[3] == signed)
            .map(|(_, w)| w[1])
    };
    let find_float = |width: u32| {
        insts
            .iter()
            .find(|(op, w)| *op == OP_TYPE_FLOAT && w[2] == width)
            .map(|(_, w)| w[1])
    };
    let u32_ty = find_int(32, 0).ok_or("the module declares no u32 type")?;
    // The value of a u32 constant id (matrix dimensions and uses are constant ids).
    let constant = |id: u32| {
        insts
            .iter()
            .find(|(op, w)| *op == OP_CONSTANT && w[1] == u32_ty && w[2] == id)
            .map(|(_, w)| w[3])
    };
    let (f16_ty, f32_ty) = (find_float(16), find_float(32));
    let mut declare = Vec::new();
    let i8_ty = find_int(8, 1).unwrap_or_else(|| {
        let id = fresh();
        declare.extend([head(OP_TYPE_INT, 4), id, 8, 1]);
        id
    });
    let i32_ty = find_int(32, 1).unwrap_or_else(|| {
        let id = fresh();
        declare.extend([head(OP_TYPE_INT, 4), id, 32, 1]);
        id
    });
    let c32 = insts
        .iter()
        .find(|(op, w)| *op == OP_CONSTANT && w[1] == u32_ty && w[3] == 32)
        .map(|(_, w)| w[2])
        .unwrap_or_else(|| {
            let id = fresh();
            declare.extend([head(OP_CONSTANT, 4), u32_ty, id, 32]);
            id
        });
    let has_int8 = insts
        .iter()
        .any(|(op, w)| *op == OP_CAPABILITY && w[1] == CAPABILITY_INT8);

    let mut out = words[..HEADER].to_vec();
    let (mut retyped, mut mul_adds) = ([0usize; 3], 0usize);
    let mut capabilities_done = false;
    let mut declared = false;
    for (op, w) in &insts {
        if !capabilities_done && *op != OP_CAPABILITY {
            if !has_int8 {
                out.extend([head(OP_CAPABILITY, 2), CAPABILITY_INT8]);
            }
            capabilities_done = true;
        }
        match *op {
            OP_TYPE_COOP_MATRIX => {
                if !declared {
                    out.extend_from_slice(&declare);
                    declared = true;
                }
                let [_, id, component, scope, rows, cols, usage] = **w else {
                    return Err("malformed OpTypeCooperativeMatrixKHR".into());
                };
                if constant(rows) != Some(16) || constant(cols) != Some(16) {
                    return Err(format!("matrix type %{id} is not 16 x 16"));
                }
                // naga types a loaded matrix by its pointer's scalar: the skeleton's A / B come
                // from vec4<f32> staging, so they are f32 (f16 as declared, u32 from u32 staging).
                let ab = [f16_ty, f32_ty, Some(u32_ty)].contains(&Some(component));
                let (component, rows, cols) = match constant(usage) {
                    Some(USE_A) if ab => (i8_ty, rows, c32),
                    Some(USE_B) if ab => (i8_ty, c32, cols),
                    Some(USE_C) if Some(component) == f32_ty => (i32_ty, rows, cols),
                    _ => return Err(format!("matrix type %{id} is not an A, B or f32 C")),
                };
                retyped[constant(usage).unwrap_or(0) as usize] += 1;
                out.extend([w[0], id, component, scope, rows, cols, usage]);
            }
            OP_COOP_MUL_ADD => {
                mul_adds += 1;
                match w.len() {
                    6 => {
                        out.push(head(OP_COOP_MUL_ADD, 7));
                        out.extend_from_slice(&w[1..]);
                        out.push(SIGNED_OPERANDS);
                    }
                    7 => {
                        out.extend_from_slice(&w[..6]);
                        out.push(w[6] | SIGNED_OPERANDS);
                    }
                    _ => return Err("malformed OpCooperativeMatrixMulAddKHR".into()),
                }
            }
            _ => out.extend_from_slice(w),
        }
    }
    if retyped != [1, 1, 1] || mul_adds == 0 {
        return Err(format!(
            "expected one A, one B and one C matrix type and some multiply-adds, found \
             {retyped:?} types and {mul_adds} multiply-adds"
        ));
    }
    out[3] = bound;
    Ok(out)
}

/// The passthrough shader module of SPIR-V `words` with compute entry point `entry` (the
/// pipeline cache calls this inside its error scopes: a driver rejection becomes a caught error).
pub(crate) fn create_module(
    device: &wgpu::Device,
    name: &'static str,
    entry: &'static str,
    words: Vec<u32>,
) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptorPassthrough {
        label: Some(name),
        entry_points: Cow::Owned(vec![wgpu::PassthroughShaderEntryPoint {
            name: Cow::Borrowed(entry),
            // Unused for SPIR-V: the module declares its workgroup size.
            workgroup_size: (0, 0, 0),
        }]),
        spirv: Some(Cow::Owned(words)),
        ..Default::default()
    };
    // SAFETY: `words` is naga's SPIR-V of one of this project's kernels (naga-validated, with
    // bounds-checked indexing), changed only in the types of its cooperative matrices and the
    // signedness operands of their multiply-adds (`retype_int8`); its bindings are those of the
    // explicit pipeline layout the cache builds from the same kernel declaration.
    unsafe { device.create_shader_module_passthrough(desc) }
}

/// Whether the Vulkan driver behind `device` lists the configuration the int8 kernels use: int8
/// 16 × 16 × 32 cooperative matrices with 32-bit integer accumulators at subgroup scope. Asked
/// through wgpu's hal (`vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR`, as wgpu-hal asks it
/// for the configurations it reports). False off Vulkan and without cooperative matrices.
#[cfg(all(not(target_arch = "wasm32"), not(target_vendor = "apple")))]
pub(crate) fn driver_has_int8_coop(device: &wgpu::Device) -> bool {
    use ash::vk::{ComponentTypeKHR as T, ScopeKHR};
    if !device
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        // wgpu enables VK_KHR_cooperative_matrix exactly with this feature.
        return false;
    }
    // SAFETY: the hal device is only read (its instance, entry and physical device handles) to
    // query properties, which changes no state of the device wgpu owns.
    let Some(hal) = (unsafe { device.as_hal::<wgpu::hal::api::Vulkan>() }) else {
        return false;
    };
    let shared = hal.shared_instance();
    let coop = ash::khr::cooperative_matrix::Instance::new(shared.entry(), shared.raw_instance());
    // SAFETY: the physical device belongs to this instance, and the extension is enabled (the
    // feature check above).
    let props = unsafe {
        coop.get_physical_device_cooperative_matrix_properties(hal.raw_physical_device())
    };
    props.is_ok_and(|props| {
        props.iter().any(|p| {
            (p.m_size, p.n_size, p.k_size) == (16, 16, 32)
                && (p.a_type, p.b_type) == (T::SINT8, T::SINT8)
                && (p.c_type, p.result_type) == (T::SINT32, T::SINT32)
                && p.scope == ScopeKHR::SUBGROUP
        })
    })
}

/// Off Vulkan targets: never.
#[cfg(not(all(not(target_arch = "wasm32"), not(target_vendor = "apple"))))]
pub(crate) fn driver_has_int8_coop(_device: &wgpu::Device) -> bool {
    false
}

#[cfg(test)]
#[path = "spirv_tests.rs"]
mod tests;
