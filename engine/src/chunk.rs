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
pub(crate) fn binding_chunks(
    gpu: &Gpu,
    what: &str,
    count: u64,
    item_bytes: u64,
) -> Result<Vec<Range<u64>>> {
    let align = u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment);
    chunk_ranges(what, count, item_bytes, gpu.caps.max_binding, align)
}

/// Items in one chunk at most, whatever the binding limit: callers pass a chunk's item count
/// to kernels as a `u32`, and kernels index its items (and step past the last) with 32 bits.
/// Bindings of 16 GiB and more (Metal on large-memory Apple silicon) would otherwise give f32
/// chunks of 2^32 items or more, whose count wrapped (a `fill` of 5e9 values left most unset).
pub(crate) const MAX_CHUNK_ITEMS: u64 = 1 << 30;

/// [`binding_chunks`] for an explicit binding `limit` and offset `align`ment.
pub(crate) fn chunk_ranges(
    what: &str,
    count: u64,
    item_bytes: u64,
    limit: u64,
    align: u64,
) -> Result<Vec<Range<u64>>> {
    let align = align.max(4);
    // Items per chunk must keep every chunk start aligned: a multiple of align / gcd.
    let step = align / gcd(align, item_bytes.max(1));
    let per = (limit / item_bytes.max(1)).min(MAX_CHUNK_ITEMS) / step * step;
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
    fold(n, gpu.caps.limits.max_compute_workgroups_per_dimension)
}

/// `Err(LimitExceeded)` naming `max_compute_workgroups_per_dimension` if a dimension exceeds it.
pub(crate) fn check_grid(gpu: &Gpu, what: &str, groups: [u32; 3]) -> Result<()> {
    let max = gpu.caps.limits.max_compute_workgroups_per_dimension;
    match groups.iter().find(|&&d| d > max) {
        Some(&d) => Err(Error::LimitExceeded {
            limit: "max_compute_workgroups_per_dimension",
            requested: u64::from(d),
            max: u64::from(max),
            what: what.to_string(),
        }),
        None => Ok(()),
    }
}

/// [`fold_workgroups`] for an explicit per-dimension limit.
pub(crate) fn fold(n: u64, max: u32) -> Result<[u32; 3]> {
    let max = u64::from(max);
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

#[cfg(test)]
mod tests {
    use super::{chunk_ranges, fold};
    use crate::error::Error;

    #[test]
    fn chunks_fit_the_limit_and_start_aligned() {
        assert_eq!(chunk_ranges("t", 10, 4, 1 << 20, 256).unwrap(), vec![0..10]);
        // 4-byte items, 1000-byte limit, 256-byte alignment: 192 items (768 bytes) per chunk.
        let c = chunk_ranges("t", 1000, 4, 1000, 256).unwrap();
        assert_eq!(c.first(), Some(&(0..192)));
        assert_eq!(c.last(), Some(&(960..1000)));
        assert!(
            c.iter()
                .all(|r| (r.start * 4) % 256 == 0 && (r.end - r.start) * 4 <= 1000)
        );
        // Rows of 12 bytes with 16-byte alignment: chunk starts must be multiples of 4 rows.
        let c = chunk_ranges("t", 100, 12, 200, 16).unwrap();
        assert!(
            c.iter()
                .all(|r| (r.start * 12) % 16 == 0 && (r.end - r.start) * 12 <= 200)
        );
        assert_eq!(c.iter().map(|r| r.end - r.start).sum::<u64>(), 100);
    }

    /// A binding limit far above 4 GiB still gives chunks of at most 2^30 items, covering the
    /// count in order.
    #[test]
    fn chunks_stay_u32_countable_under_huge_limits() {
        let count = 5_000_000_000u64;
        let c = chunk_ranges("t", count, 4, 1 << 40, 256).unwrap();
        assert!(c.iter().all(|r| r.end - r.start <= super::MAX_CHUNK_ITEMS));
        assert_eq!(c.first().map(|r| r.start), Some(0));
        assert_eq!(c.last().map(|r| r.end), Some(count));
        assert!(c.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn an_item_above_the_limit_is_a_limit_error() {
        let e = chunk_ranges("big rows", 4, 4096, 1024, 256).unwrap_err();
        assert!(matches!(
            e,
            Error::LimitExceeded {
                limit: "max_storage_buffer_binding_size",
                ..
            }
        ));
    }

    #[test]
    fn folding_covers_the_count_within_the_limit() {
        assert_eq!(fold(5, 65535).unwrap(), [5, 1, 1]);
        assert_eq!(fold(65535, 65535).unwrap(), [65535, 1, 1]);
        assert_eq!(fold(65536, 65535).unwrap(), [32768, 2, 1]);
        let [x, y, _] = fold(1 << 30, 65535).unwrap();
        assert!(u64::from(x) * u64::from(y) >= 1 << 30 && x <= 65535 && y <= 65535);
        assert!(matches!(
            fold(1 << 40, 65535),
            Err(Error::LimitExceeded { .. })
        ));
    }
}
