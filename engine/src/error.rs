//! The one error type of `bitnet-wgpu`.
//!
//! Every fallible path of the engine returns [`Error`]: bad input becomes a typed error naming the
//! operation and the offending value, and GPU failures (lost device, out of memory, validation or
//! pipeline-creation errors caught in wgpu error scopes) become typed errors instead of panics.

use crate::tensor::DType;

/// Everything that can go wrong in `bitnet-wgpu`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the CPU reference engine (bad shapes, lengths, packed codes, ...), other than a
    /// non-finite value, which maps to [`Error::NonFinite`] so both backends report it identically,
    /// and the host running out of memory for an output, which maps to [`Error::OutOfMemory`].
    #[error(transparent)]
    CpuRef(bitnet_cpu_ref::Error),
    /// No usable GPU adapter (or device) was found; says what was tried.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The GPU device was lost (driver reset, `destroy`, fatal error); it is not used again.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// The GPU — or, for a host tensor, the host — ran out of memory while doing `context`.
    #[error("out of memory while {context}")]
    OutOfMemory {
        /// What the engine was doing (e.g. "allocating a 512 MiB buffer").
        context: String,
    },
    /// wgpu reported a validation (or internal) error while doing `context`.
    #[error("GPU validation error while {context}: {message}")]
    Validation {
        /// What the engine was doing.
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// A kernel failed to compile or its pipeline could not be created.
    #[error("pipeline creation failed for kernel `{kernel}` entry `{entry}`: {message}")]
    PipelineCreation {
        /// Kernel name (`KernelSource::name`).
        kernel: &'static str,
        /// Entry point.
        entry: &'static str,
        /// wgpu's (naga's) description.
        message: String,
    },
    /// A size exceeds a device limit, e.g. a binding above `max_storage_buffer_binding_size`, or
    /// another fixed bound of a backend (32-bit kernel indices, the host's largest allocation).
    /// Under `Auto` dispatch such an op runs on the CPU instead (see the crate docs).
    #[error(
        "{what} needs {requested}{unit}, above the {kind} `{limit}` = {max}{unit}",
        unit = limit_unit(limit),
        kind = limit_kind(limit)
    )]
    LimitExceeded {
        /// The limit's name: a wgpu limit (e.g. `"max_storage_buffer_binding_size"`) or a
        /// description of the bound.
        limit: &'static str,
        /// The requested size (bytes for the size limits, a count for count limits).
        requested: u64,
        /// The limit's value on this device.
        max: u64,
        /// What needed it (op and tensor).
        what: String,
    },
    /// A [`KvCache`](crate::KvCache) append would pass the capacity the cache was made with: the
    /// cache is unchanged (truncate or clear it, or make a larger one). Not a device limit: the
    /// same append fails on every backend.
    #[error(
        "kv_cache append: {held} positions held + {appended} appended pass the cache's capacity \
         of {capacity} positions"
    )]
    CacheFull {
        /// Positions the cache holds.
        held: usize,
        /// Positions the append would add.
        appended: usize,
        /// Positions the cache was made to hold.
        capacity: usize,
    },
    /// Shapes are incompatible or do not match the data length.
    #[error("{op}: shape mismatch: {detail}")]
    ShapeMismatch {
        /// The operation that rejected its input.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A tensor has the wrong element type for the operation.
    #[error("{op}: expected dtype {expected}, got {got}")]
    DTypeMismatch {
        /// The operation that rejected its input.
        op: &'static str,
        /// The dtype the operation needs.
        expected: DType,
        /// The dtype given.
        got: DType,
    },
    /// A tensor with zero elements was given where at least one is needed.
    #[error("{op}: tensor has zero elements (shape {shape:?})")]
    EmptyTensor {
        /// The operation that rejected its input.
        op: &'static str,
        /// The empty shape.
        shape: Vec<usize>,
    },
    /// A NaN or infinite value: same shape as `bitnet_cpu_ref::Error::NonFinite`, on both backends.
    #[error("{op}: non-finite value in {tensor} at flat index {index}")]
    NonFinite {
        /// The operation that saw the value.
        op: &'static str,
        /// Which tensor held it.
        tensor: &'static str,
        /// Row-major flat index of the first non-finite value found.
        index: usize,
    },
    /// A GPU run gave up before finishing and its outputs were discarded: a kernel that waits
    /// inside its dispatch for other workgroups (the linear chain, one-dispatch weight
    /// quantization) ran out of its bounded wait, because the GPU did not run workgroups in the
    /// order the kernel relies on. Nothing was lost: a chain and the host-facing ops run again
    /// another way; a resident-tensor op reports this at the read of its output, with its inputs
    /// untouched. Either way the device stops using such kernels.
    #[error("{op}: the GPU run was aborted (an in-dispatch wait ran out)")]
    Aborted {
        /// The operation whose run was aborted.
        op: &'static str,
    },
    /// The operation needs something this backend or device does not have.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A tensor created by one engine was passed to another.
    #[error("{op}: tensor belongs to a different engine")]
    EngineMismatch {
        /// The operation that rejected its input.
        op: &'static str,
    },
    /// A kernel was launched inconsistently with its declaration (an engine bug, reported rather
    /// than panicking): wrong binding count or access, params too large, feature missing.
    #[error("kernel `{kernel}` misuse: {message}")]
    KernelMisuse {
        /// Kernel name.
        kernel: &'static str,
        /// What is inconsistent.
        message: String,
    },
    /// Mapping a buffer for read-back failed.
    #[error("buffer read-back failed: {0}")]
    Map(String),
    /// An engine bug: code the submission thread ran for this call — the engine's own or wgpu's
    /// — panicked (the panic's message). The panic was caught and the device is not lost: the
    /// engine goes on using it, a host-facing op re-runs on the CPU as for any GPU fault, and a
    /// launch whose recording panicked has its outputs read as this error.
    #[error("internal error: the submission thread panicked: {0}")]
    Panicked(String),
}

impl From<bitnet_cpu_ref::Error> for Error {
    fn from(e: bitnet_cpu_ref::Error) -> Self {
        match e {
            bitnet_cpu_ref::Error::NonFinite { op, tensor, index } => {
                Error::NonFinite { op, tensor, index }
            }
            // The CPU backend's host ran out of memory: the same variant as a host tensor that
            // cannot be allocated (`upload`), so callers handle one out-of-memory case.
            bitnet_cpu_ref::Error::OutOfMemory { op, what, bytes } => Error::OutOfMemory {
                context: format!("{op}: allocating {bytes} bytes of host memory for {what}"),
            },
            other => Error::CpuRef(other),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Maps a wgpu error captured by an error scope to the engine error, with context.
pub(crate) fn from_wgpu(e: wgpu::Error, context: impl Into<String>) -> Error {
    match e {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory {
            context: context.into(),
        },
        wgpu::Error::Validation { description, .. } | wgpu::Error::Internal { description, .. } => {
            Error::Validation {
                context: context.into(),
                message: description,
            }
        }
    }
}

/// The unit of a [`Error::LimitExceeded`]'s figures: bytes for the size limits, none for the
/// count limits (workgroups, storage buffers, elements).
fn limit_unit(limit: &str) -> &'static str {
    const BYTE_LIMITS: [&str; 5] = [
        "max_buffer_size",
        "max_storage_buffer_binding_size",
        "max_uniform_buffer_binding_size",
        "max_compute_workgroup_storage_size",
        "isize::MAX (host allocation)",
    ];
    if BYTE_LIMITS.contains(&limit) {
        " bytes"
    } else {
        ""
    }
}

/// What a [`Error::LimitExceeded`]'s limit is: one of the device's (wgpu's `max_*` limits), or a
/// fixed bound of the engine or the host.
fn limit_kind(limit: &str) -> &'static str {
    if limit.starts_with("max_") {
        "device limit"
    } else {
        "limit"
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn limits_name_their_unit_and_kind() {
        let e = |limit, requested, max| {
            Error::LimitExceeded {
                limit,
                requested,
                max,
                what: "op: x".into(),
            }
            .to_string()
        };
        assert_eq!(
            e("max_storage_buffer_binding_size", 300, 256),
            "op: x needs 300 bytes, above the device limit `max_storage_buffer_binding_size` = \
             256 bytes"
        );
        assert_eq!(
            e("max_compute_workgroups_per_dimension", 70_000, 65_535),
            "op: x needs 70000, above the device limit `max_compute_workgroups_per_dimension` = \
             65535"
        );
        assert_eq!(
            e("the chain kernel's u32 offsets", 1 << 33, u32::MAX.into()),
            "op: x needs 8589934592, above the limit `the chain kernel's u32 offsets` = 4294967295"
        );
        let full = Error::CacheFull {
            held: 4,
            appended: 5,
            capacity: 8,
        };
        assert_eq!(
            full.to_string(),
            "kv_cache append: 4 positions held + 5 appended pass the cache's capacity of 8 \
             positions"
        );
    }
}
