//! [`Kernel`]: what the engine knows of one compute kernel — its source and entry point, its
//! buffers and their access, the device features it needs, and how it reaches the driver (WGSL,
//! or a passthrough shader). Ops declare their kernels as constants of this type; the pipeline
//! cache (`pipelines.rs`) compiles each once, and `launch.rs` binds and dispatches them.

use bitnet_kernels_wgsl::KernelSource;

/// How a kernel accesses one of its buffers (group 0, binding = position in `Kernel::bindings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// A kernel declaration: one entry point of one WGSL source, its buffers, and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// The WGSL source (its `name` is the kernel name in cache keys, errors and profiles).
    pub source: KernelSource,
    /// Entry point function.
    pub entry: &'static str,
    /// Group-0 buffers in binding order.
    pub bindings: &'static [Access],
    /// Device features the kernel needs (e.g. `SUBGROUP`, `SHADER_F16`); checked at creation.
    pub requires: wgpu::Features,
    /// How the kernel reaches the driver when not as WGSL: see `Passthrough`.
    pub passthrough: Option<Passthrough>,
}

/// A kernel built through wgpu's passthrough shaders instead of its WGSL (same layout: group 0 =
/// the kernel's `bindings`, group 1 = the engine's).
#[derive(Debug, Clone, Copy)]
pub enum Passthrough {
    /// A hand-written MSL kernel (Metal only, params as immediates; see `msl.rs`).
    Msl(&'static bitnet_kernels_msl::MslKernel),
    /// The kernel's WGSL skeleton compiled to SPIR-V by naga and retyped to int8 cooperative
    /// matrices (Vulkan only; see `spirv.rs`).
    SpirvInt8,
}

impl Kernel {
    /// A kernel with no feature requirements.
    pub const fn new(
        source: KernelSource,
        entry: &'static str,
        bindings: &'static [Access],
    ) -> Kernel {
        Kernel {
            source,
            entry,
            bindings,
            requires: wgpu::Features::empty(),
            passthrough: None,
        }
    }

    /// A passthrough MSL kernel (needs `PASSTHROUGH_SHADERS`); `bindings` are its group-0 storage
    /// buffers, in the descriptor's order.
    pub const fn msl(
        k: &'static bitnet_kernels_msl::MslKernel,
        bindings: &'static [Access],
    ) -> Kernel {
        Kernel {
            source: KernelSource {
                name: k.name,
                source: "",
            },
            entry: k.entry_point,
            bindings,
            requires: wgpu::Features::PASSTHROUGH_SHADERS,
            passthrough: Some(Passthrough::Msl(k)),
        }
    }

    /// The int8 cooperative-matrix form of a WGSL skeleton (`spirv.rs`); needs
    /// `PASSTHROUGH_SHADERS` besides `requires`.
    pub const fn spirv_int8(self) -> Kernel {
        Kernel {
            requires: self.requires.union(wgpu::Features::PASSTHROUGH_SHADERS),
            passthrough: Some(Passthrough::SpirvInt8),
            ..self
        }
    }

    /// The same kernel, requiring `features`.
    pub const fn requiring(self, features: wgpu::Features) -> Kernel {
        Kernel {
            requires: features,
            ..self
        }
    }

    /// The kernel's name (its source's name).
    pub const fn name(&self) -> &'static str {
        self.source.name
    }
}
