//! Device-limit helpers every op uses: binding-size checks, binding chunks, workgroup folding.

use std::ops::Range;

use crate::context::Gpu;
use crate::error::{Error, Result};

/// `Err(LimitExceeded)` naming `max_storage_buffer_binding_size` when `bytes` exceed it.
pub(crate) fn check_binding(gpu: &Gpu, what: &str, bytes: u64) -> Result<()> {
    if bytes > gpu.caps.max_binding {
        return Err(Error::LimitExceeded {
            limit: "max_storage_buffer_binding_size",
            requested: bytes,
            max: gpu.caps.max_binding,
            what: what.to_string(),
        });
    }
    Ok(())
}

/// `Err(LimitExceeded)` naming `max_buffer_size` when `bytes` exceed it.
pub(crate) fn check_buffer(gpu: &Gpu, what: &str, bytes: u64) -> Result<()> {
    if bytes > gpu.caps.max_buffer {
        return Err(Error::LimitExceeded {
            limit: "max_buffer_size",
            requested: bytes,
            max: gpu.caps.max_buffer,
            what: what.to_string(),
        });
    }
    Ok(())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Splits `count` items of `item_bytes` bytes each into consecutive item ranges whose bindings
/// fit `max_storage_buffer_binding_size` and start at aligned byte offsets
/// (`min_storage_buffer_offset_alignment`). One range when everything fits. An item larger than
/// the limit is `Err(LimitExceeded)` (the op cannot be split along this axis).
pub(crate) fn binding_chunks(gpu: &Gpu, what: &str, count: u64, item_bytes: u64) -> Result<Vec<Range<u64>>> {
    let limit = gpu.caps.max_binding;
    let align = u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment).max(4);
    // Items per chunk must keep every chunk start aligned: a multiple of align / gcd.
    let step = align / gcd(align, item_bytes.max(1));
    let per = (limit / item_bytes.max(1)) / step * step;
    if per == 0 {
        return Err(Error::LimitExceeded {
            limit: "max_storage_buffer_binding_size",
            requested: item_bytes * step,
            max: limit,
            what: format!("{what}: one chunk of {step} items of {item_bytes} bytes"),
        });
    }
    Ok((0..count.div_ceil(per))
        .map(|c| c * per..((c + 1) * per).min(count))
        .collect())
}

/// Folds a linear workgroup count into `[x, y, 1]` within `max_compute_workgroups_per_dimension`
/// (`x · y ≥ n`, waste < `y`).
pub(crate) fn fold_workgroups(gpu: &Gpu, n: u64) -> Result<[u32; 3]> {
    let max = u64::from(gpu.caps.limits.max_compute_workgroups_per_dimension);
    let y = n.div_ceil(max).max(1);
    if y > max {
        return Err(Error::LimitExceeded {
            limit: "max_compute_workgroups_per_dimension",
            requested: n,
            max: max * max,
            what: "a linear grid (folded into x and y)".into(),
        });
    }
    let x = n.div_ceil(y);
    Ok([x as u32, y as u32, 1])
}
