//! The one error type of `bitnet-kernels-msl`: a shape a kernel cannot run.

use std::fmt;

/// Why [`dispatch`](crate::dispatch) refused to build a launch: every kernel indexes with `u32` and
/// some hold data in fixed-size threadgroup arrays or rely on exact f32 sums, so shapes outside
/// those bounds are rejected up front instead of producing wrong results.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchError {
    /// A dimension is zero.
    ZeroDimension {
        /// The kernel's entry point.
        kernel: &'static str,
        /// The zero dimension (`"M"`, `"N"`, `"K"`, `"count"`).
        dim: &'static str,
    },
    /// A dimension or a derived size exceeds what the kernel supports.
    TooLarge {
        /// The kernel's entry point.
        kernel: &'static str,
        /// What is too large (e.g. `"K"`, `"M * K (u32 indexing)"`).
        what: &'static str,
        /// The value requested.
        value: u64,
        /// The largest supported value.
        max: u64,
    },
}

impl fmt::Display for DispatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchError::ZeroDimension { kernel, dim } => {
                write!(f, "MSL kernel `{kernel}`: dimension {dim} is zero")
            }
            DispatchError::TooLarge {
                kernel,
                what,
                value,
                max,
            } => write!(f, "MSL kernel `{kernel}`: {what} = {value} exceeds {max}"),
        }
    }
}

impl std::error::Error for DispatchError {}
